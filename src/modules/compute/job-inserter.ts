import type { Redis } from 'ioredis';
import type { Pool } from 'pg';
import type { Database } from '../../platform/db/database';
import { run, statement, tenantTransaction } from '../../platform/db/sql';
import { AppError, ErrorCode } from '../../platform/errors';
import type { AdmissionMessage, keys } from '../../platform/queue/messages';
import { VIEW_COLUMNS } from './job-view';
import type { NewJob } from './jobs.service';
import { idempotencyConflict } from './request-fingerprint';

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
  durable: boolean;
  resolve(v: Inserted): void;
  reject(e: unknown): void;
}

const MAX_BATCH = 500;

/**
 * Inserts new jobs and wakes the admitter, in batches that form by themselves (group commit): a
 * tenant's first job goes at once; jobs arriving while its insert is in flight wait for it and
 * then go together, in one statement, one commit and one pipelined round trip of wake-ups. One
 * caller alone waits no longer than before; 32 callers at once share a commit instead of queueing
 * for 32. Each batch is confined to its tenant by RLS, like every tenant write.
 */
export class JobInserter {
  private readonly pending = new Map<string, Pending[]>();
  private readonly busy = new Set<string>();

  constructor(private readonly db: Database, private readonly redis: Redis, private readonly k: ReturnType<typeof keys>) {}

  /**
   * `durable: false` is for a creator that waits for the job's end before telling anyone its id:
   * the insert then commits without waiting for the WAL flush. That is safe because whatever
   * reveals the job later flushes it first: its end is recorded by a durable commit (WAL is
   * flushed in order, so the insert goes to disk with it), and a wait that times out calls
   * `barrier()` before answering.
   */
  insert(tenantId: string, id: string, job: NewJob, opts: { durable: boolean } = { durable: true }): Promise<Inserted> {
    return new Promise<Inserted>((resolve, reject) => {
      const p: Pending = { id, job, durable: opts.durable, resolve, reject };
      const list = this.pending.get(tenantId);
      if (list) list.push(p);
      else this.pending.set(tenantId, [p]);
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
    let results: Array<Inserted | AppError>;
    try {
      results = await insertJobs(this.db.pool, tenantId, batch);
    } catch (err) {
      if (batch.length === 1) return batch[0].reject(err);
      // One bad job must not fail the others: each on its own.
      for (const p of batch) await this.flush(tenantId, [p]);
      return;
    }
    const created = results.filter((r): r is Inserted => !(r instanceof AppError) && r.created);
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
      void pipe.exec().catch(() => undefined);
    }
    batch.forEach((p, i) => {
      const r = results[i];
      if (r instanceof AppError) p.reject(r);
      else p.resolve(r);
    });
  }

  /**
   * Returns once every commit made so far is on disk: a durable commit of a transaction with an
   * xid flushes the WAL up to its commit record, and with it every earlier non-durable insert.
   */
  async barrier(): Promise<void> {
    await this.db.pool.query('SELECT txid_current()');
  }
}

const RETURNED = ['created_at', ...VIEW_COLUMNS.filter((c) => c !== 'created_at')].join(', ');

/** One autocommit statement: nimbus_insert_jobs (migrations JobInsert, RequestHash) sets the RLS tenant itself. */
const INSERT_JOBS = statement('jobs.insert', `SELECT ${RETURNED} FROM nimbus_insert_jobs($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)`);

/** The job of a taken idempotency key, with the fingerprint of the request that created it (migration RequestHash). */
const FIND_BY_IDEMPOTENCY_KEY = statement('jobs.by-idempotency-key',
  `SELECT ${RETURNED}, request_hash FROM jobs WHERE tenant_id = $1 AND idempotency_key = $2`);

type Prior = Record<string, unknown> & { id: string; service: string; request_hash: string | null };

async function insertJobs(pool: Pool, tenantId: string, batch: Pending[]): Promise<Array<Inserted | AppError>> {
  const col = <T>(f: (j: NewJob, id: string) => T) => batch.map((p) => f(p.job, p.id));
  const durable = batch.some((p) => p.durable);
  const rows: Array<Record<string, unknown> & { id: string }> = await run(pool, INSERT_JOBS,
    [tenantId, durable, col((_, id) => id), col((j) => j.kind), col((j) => j.service), col((j) => j.parentId ?? null), col((j) => j.hardware),
      col((j) => j.devices), col((j) => JSON.stringify(j.input ?? null)), col((j) => j.idempotencyKey ?? null), col((j) => j.webhookUrl ?? null),
      col((j) => (j.webhookEvents ?? []).join(',')), col((j) => j.deadlineSeconds ?? null), col((j) => j.maxAttempts ?? 3),
      col((j) => j.requestHash ?? null)],
  );
  const byId = new Map(rows.map((r) => [r.id, r]));
  const taken = batch.filter((p) => !byId.has(p.id));
  // Idempotency keys already taken (by an earlier job, or by one earlier in this batch): that job.
  // The batch is committed: from here on a failure fails only the requests it concerns.
  const existing = taken.length === 0 ? new Map<string, Prior>()
    : await tenantTransaction(pool, tenantId, async (c) => {
      const found = new Map<string, Prior>();
      for (const p of taken) {
        const [row] = await run<Prior>(c, FIND_BY_IDEMPOTENCY_KEY, [tenantId, p.job.idempotencyKey]);
        found.set(p.id, row);
      }
      return found;
    }).catch((err: Error) => err);
  return batch.map((p) => {
    const row = byId.get(p.id);
    if (row) return { id: p.id, created: true, row };
    if (existing instanceof Error) return new AppError(ErrorCode.INTERNAL, 'Could not read the job of this idempotency key; retry the request');
    const { request_hash: priorHash, ...prior } = existing.get(p.id)!;
    // Only this request fails: the others of the batch are committed already.
    const conflict = idempotencyConflict(prior.service === p.job.service, priorHash, p.job.requestHash);
    if (conflict) return conflict;
    return { id: prior.id, created: false, row: prior };
  });
}
