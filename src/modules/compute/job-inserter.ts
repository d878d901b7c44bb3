import type { Redis } from 'ioredis';
import type { Pool } from 'pg';
import type { Database } from '../../platform/db/database';
import { poolOf, run, statement, tenantTransaction, type Runner } from '../../platform/db/sql';
import { AppError, ErrorCode } from '../../platform/errors';
import type { AdmissionMessage, keys } from '../../platform/queue/messages';
import { VIEW_COLUMNS } from './job-view';
import type { NewJob } from './jobs.service';

export interface Inserted {
  id: string;
  /** False when the idempotency key named an existing job: `id` is that job's. */
  created: boolean;
  /** The row as inserted (VIEW_COLUMNS), for answering without a second read. */
  row: Record<string, unknown>;
}

interface Pending {
  id: string;
  job: NewJob;
  resolve(v: Inserted): void;
  reject(e: unknown): void;
}

const MAX_BATCH = 500;

/**
 * Inserts new jobs and wakes the admitter, in batches that form by themselves (group commit): a
 * tenant's first job goes at once; jobs arriving while its insert is in flight wait for it and
 * then go together, in one statement, one commit and one pipelined round trip of wake-ups. One
 * caller alone waits no longer than before; 32 callers at once share a commit instead of queueing
 * for 32. Each batch runs in the tenant's RLS transaction, like every tenant write.
 */
export class JobInserter {
  private readonly pending = new Map<string, Pending[]>();
  private readonly busy = new Set<string>();
  private pool: Pool | null = null;

  constructor(private readonly db: Database, private readonly redis: Redis, private readonly k: ReturnType<typeof keys>) {}

  insert(tenantId: string, id: string, job: NewJob): Promise<Inserted> {
    return new Promise<Inserted>((resolve, reject) => {
      const list = this.pending.get(tenantId);
      if (list) list.push({ id, job, resolve, reject });
      else this.pending.set(tenantId, [{ id, job, resolve, reject }]);
      if (!this.busy.has(tenantId)) void this.drain(tenantId);
    });
  }

  private async drain(tenantId: string): Promise<void> {
    this.busy.add(tenantId);
    try {
      for (;;) {
        const list = this.pending.get(tenantId);
        if (!list?.length) break;
        const batch = list.splice(0, MAX_BATCH);
        if (list.length === 0) this.pending.delete(tenantId);
        await this.flush(tenantId, batch);
      }
    } finally {
      this.busy.delete(tenantId);
    }
  }

  private async flush(tenantId: string, batch: Pending[]): Promise<void> {
    let results: Inserted[];
    try {
      this.pool ??= poolOf(this.db.dataSource);
      results = await tenantTransaction(this.pool, tenantId, (c) => insertJobs(c, tenantId, batch));
    } catch (err) {
      if (batch.length === 1) return batch[0].reject(err);
      // One bad job must not fail the others: each on its own.
      for (const p of batch) await this.flush(tenantId, [p]);
      return;
    }
    const created = results.filter((r) => r.created);
    if (created.length) {
      const pipe = this.redis.pipeline();
      for (const r of created) {
        const job = batch.find((p) => p.id === r.id)!.job;
        const msg: AdmissionMessage = {
          op: 'enqueue', id: r.id, tenantId, hardware: job.hardware, devices: job.devices, enqueuedAt: +(r.row.created_at as Date),
        };
        pipe.xadd(this.k.admission, 'MAXLEN', '~', 100_000, '*', 'm', JSON.stringify(msg));
      }
      // A lost wake-up is not a lost job (the reconciler admits QUEUED jobs the admitter does not
      // know), so the jobs, committed, are answered as created even if Redis did not take it.
      await pipe.exec().catch(() => undefined);
    }
    batch.forEach((p, i) => p.resolve(results[i]));
  }
}

const RETURNED = ['created_at', ...VIEW_COLUMNS.filter((c) => c !== 'created_at')].join(', ');

const INSERT_JOBS = statement('jobs.insert', `INSERT INTO jobs (id, tenant_id, kind, service, parent_id, status, hardware, devices, input, idempotency_key,
                       webhook_url, webhook_events, deadline_at, max_attempts)
     SELECT t.id, $1, t.kind, t.service, t.parent_id, 'QUEUED', t.hardware, t.devices, t.input, t.idem, t.url,
            COALESCE(string_to_array(NULLIF(t.events, ''), ','), '{}'),
            CASE WHEN t.deadline IS NULL THEN NULL ELSE now() + make_interval(secs => t.deadline) END, t.attempts
       FROM unnest($2::uuid[], $3::text[], $4::text[], $5::uuid[], $6::text[], $7::int[], $8::jsonb[], $9::text[], $10::text[], $11::text[], $12::int[], $13::int[])
         WITH ORDINALITY AS t(id, kind, service, parent_id, hardware, devices, input, idem, url, events, deadline, attempts, n)
      ORDER BY t.n
     ON CONFLICT (tenant_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
     RETURNING ${RETURNED}`);

const FIND_BY_IDEMPOTENCY_KEY = statement('jobs.by-idempotency-key', `SELECT ${RETURNED} FROM jobs WHERE tenant_id = $1 AND idempotency_key = $2`);

async function insertJobs(c: Runner, tenantId: string, batch: Pending[]): Promise<Inserted[]> {
  const col = <T>(f: (j: NewJob, id: string) => T) => batch.map((p) => f(p.job, p.id));
  const rows: Array<Record<string, unknown> & { id: string }> = await run(c, INSERT_JOBS,
    [tenantId, col((_, id) => id), col((j) => j.kind), col((j) => j.service), col((j) => j.parentId ?? null), col((j) => j.hardware),
      col((j) => j.devices), col((j) => JSON.stringify(j.input ?? null)), col((j) => j.idempotencyKey ?? null), col((j) => j.webhookUrl ?? null),
      col((j) => (j.webhookEvents ?? []).join(',')), col((j) => j.deadlineSeconds ?? null), col((j) => j.maxAttempts ?? 3)],
  );
  const byId = new Map(rows.map((r) => [r.id, r]));
  const out: Inserted[] = [];
  for (const p of batch) {
    const row = byId.get(p.id);
    if (row) {
      out.push({ id: p.id, created: true, row });
      continue;
    }
    // Its idempotency key is taken (by an earlier job, or by one earlier in this batch).
    const [existing] = await run<Record<string, unknown> & { id: string; service: string }>(c, FIND_BY_IDEMPOTENCY_KEY, [tenantId, p.job.idempotencyKey]);
    if (existing.service !== p.job.service) {
      throw new AppError(ErrorCode.CONFLICT, 'This idempotency key was used for a different request', { field: 'input.idempotencyKey' });
    }
    out.push({ id: existing.id, created: false, row: existing });
  }
  return out;
}
