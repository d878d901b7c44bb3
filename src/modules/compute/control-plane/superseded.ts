/** Anything with TypeORM's `query` (an EntityManager inside a transaction). */
interface Queryable {
  query(sql: string, params?: unknown[]): Promise<unknown>;
}

/**
 * Locks the ADMITTED/RUNNING jobs matching `where` (in id order, as the recorder locks them:
 * never ledger-then-job against job-then-ledger) and records their current attempt in the ledger,
 * not billable, with `reason`: call it in the transaction that then takes those attempts back
 * (preempted, given up as lost), before it changes the jobs.
 *
 * The attempt's own end, if its node still reports one, then finds its (job, attempt) row taken
 * and bills nothing, whatever the job has become by then: re-admitted, canceled in the queue,
 * expired, failed for good. Without this row a late end of a taken-back attempt would be judged
 * by the job's state at that moment, and bill work the platform threw away. An attempt whose start
 * was recorded is recorded from its start until now; one that was not (its node may have begun it,
 * its `started` event unrecorded) with 0 ms.
 */
export async function recordTakenBackAttempts(m: Queryable, where: string, params: unknown[], reason: string): Promise<void> {
  const n = params.length;
  await m.query(`SELECT id FROM jobs WHERE ${where} AND status IN ('ADMITTED','RUNNING') ORDER BY id FOR UPDATE`, params);
  await m.query(
    `INSERT INTO usage_ledger (tenant_id, job_id, attempt, job_kind, service, hardware, devices, node_id, started_at, ended_at, billable_ms, billable, reason)
     SELECT tenant_id, id, attempt, kind, service, hardware, devices, node_id, COALESCE(started_at, now()), now(),
            CASE WHEN started_at IS NULL THEN 0 ELSE GREATEST(0, (devices * extract(epoch FROM now() - started_at) * 1000)::bigint) END, false, $${n + 1}
       FROM jobs WHERE ${where} AND status IN ('ADMITTED','RUNNING')
     ON CONFLICT (job_id, attempt) DO NOTHING`,
    [...params, reason],
  );
}
