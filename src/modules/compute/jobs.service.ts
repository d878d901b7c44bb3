import { randomUUID } from 'node:crypto';
import type { Redis } from 'ioredis';
import type { EntityManager } from 'typeorm';
import { z } from 'zod';
import type { Database } from '../../platform/db/database';
import { AppError, ErrorCode, badInput, notFound } from '../../platform/errors';
import { keysetWhere, paginate, type PageArgs } from '../../platform/pagination';
import type { AdmissionMessage, keys } from '../../platform/queue/messages';
import { parseInput } from '../../platform/validation';
import { requireScope, type Principal } from '../tenancy/principal';
import { isUuid, type Caller } from '../tenancy/tenancy.service';
import { TERMINAL, type Hardware, type JobKind, type JobStatus } from './compute.entities';
import type { JobUpdateBus } from './job-updates';

export interface JobView {
  id: string;
  kind: JobKind;
  service: string;
  status: JobStatus;
  progress: number;
  output: unknown;
  error: { code: string; message: string } | null;
  logs: string[];
  attempt: number;
  nodeId: string | null;
  hardware: Hardware;
  createdAt: Date;
  startedAt: Date | null;
  completedAt: Date | null;
  usage: { seconds: number; hardware: Hardware };
  metrics: Record<string, number>;
}

/** What a job is to run: resolved from a service id or a deployment, with its input validated. */
export interface ResolvedTarget {
  service: string;
  input: unknown;
  hardware: Hardware;
  devices: number;
  /** Worst-case price of the job, for spend-limit admission. */
  maxSeconds?: number;
}

export interface NewJob extends ResolvedTarget {
  kind: JobKind;
  parentId?: string | null;
  idempotencyKey?: string | null;
  webhookUrl?: string | null;
  webhookEvents?: string[];
  deadlineSeconds?: number | null;
  maxAttempts?: number;
}

/** Checks run before a job is accepted (payment status, spend limit); they throw AppErrors. */
export type AdmissionGuard = (tenantId: string, job: NewJob) => Promise<void>;
export type TargetResolver = (caller: Principal, ref: { service?: string; deployment?: string }, input: unknown) => Promise<ResolvedTarget>;

const WEBHOOK_EVENTS = ['STARTED', 'PROGRESS'] as const;

const predictSchema = z
  .strictObject({
    service: z.string().min(1).max(100).optional(),
    deployment: z.string().min(1).max(100).optional(),
    input: z.unknown().refine((v) => v !== undefined && v !== null, 'is required'),
    wait: z.number().int().min(0).max(60).default(30),
    deadlineSeconds: z.number().int().min(1).max(7 * 24 * 3600).optional(),
    webhookUrl: z.url({ protocol: /^https?$/, error: 'must be an http(s) URL' }).max(2000).optional(),
    webhookEvents: z.array(z.enum(WEBHOOK_EVENTS)).optional(),
    idempotencyKey: z.string().min(1).max(255).optional(),
  })
  .refine((v) => (v.service === undefined) !== (v.deployment === undefined), {
    message: 'give exactly one of service or deployment', path: ['service'],
  });

/** Jobs as the API sees them: create (with idempotency), read, list, cancel, wait. */
export class JobsService {
  readonly guards: AdmissionGuard[] = [];

  constructor(
    private readonly db: Database,
    private readonly redis: Redis,
    private readonly k: ReturnType<typeof keys>,
    private readonly bus: JobUpdateBus,
    private readonly resolveTarget: TargetResolver,
    private readonly opts: { allowPlainHttpWebhooks: boolean },
  ) {}

  async predict(caller: Caller, raw: unknown): Promise<JobView> {
    const p = requireScope(caller.principal, 'PREDICT');
    const input = parseInput(predictSchema, stripNulls(raw));
    if (input.webhookUrl && !this.opts.allowPlainHttpWebhooks && !input.webhookUrl.startsWith('https://')) {
      throw badInput('input.webhookUrl', 'must be an https URL');
    }
    const target = await this.resolveTarget(p, { service: input.service, deployment: input.deployment }, input.input);
    const job = await this.submit(p.tenantId, {
      ...target, kind: 'PREDICTION', idempotencyKey: input.idempotencyKey, webhookUrl: input.webhookUrl,
      webhookEvents: input.webhookEvents, deadlineSeconds: input.deadlineSeconds,
    }, input.wait);
    return job;
  }

  /** Creates (or finds, by idempotency key) a job, wakes the admitter and optionally waits for its end. */
  async submit(tenantId: string, job: NewJob, waitSeconds = 0): Promise<JobView> {
    for (const guard of this.guards) await guard(tenantId, job);
    const id = randomUUID();
    const waiter = waitSeconds > 0 ? this.bus.waiter(id, (u) => TERMINAL.has(u.status as JobStatus)) : null;
    const created = await this.db.tenant(tenantId, (m) => insertJob(m, id, tenantId, job));
    if (created.id !== id) {
      // Same idempotency key: the earlier job, never a second one.
      waiter?.cancel();
      return this.waitAndRead(tenantId, created.id, waitSeconds);
    }
    const msg: AdmissionMessage = { op: 'enqueue', id, tenantId, hardware: job.hardware, devices: job.devices, enqueuedAt: +created.createdAt };
    await this.redis.xadd(this.k.admission, 'MAXLEN', '~', 100_000, '*', 'm', JSON.stringify(msg));
    if (!waiter) return toView({ ...created.row, billable_ms: 0 }); // as inserted: no second read
    await waiter.promise(waitSeconds * 1000);
    return this.read(tenantId, id);
  }

  private async waitAndRead(tenantId: string, id: string, waitSeconds: number): Promise<JobView> {
    if (waitSeconds > 0) {
      const waiter = this.bus.waiter(id, (u) => TERMINAL.has(u.status as JobStatus));
      const now = await this.read(tenantId, id);
      if (TERMINAL.has(now.status)) {
        waiter.cancel();
        return now;
      }
      await waiter.promise(waitSeconds * 1000);
    }
    return this.read(tenantId, id);
  }

  async prediction(caller: Caller, id: string): Promise<JobView> {
    const p = requireScope(caller.principal, 'READ');
    return this.read(p.tenantId, id, 'PREDICTION');
  }

  async predictions(caller: Caller, args: PageArgs) {
    const p = requireScope(caller.principal, 'READ');
    return this.db.tenant(p.tenantId, (m) =>
      paginate<JobView>(args, async (after, limit) => {
        const where = keysetWhere(after, 2, 'j');
        const rows = await m.query(
          `${SELECT_VIEW} WHERE j.tenant_id = $1 AND j.kind = 'PREDICTION' AND ${where.sql} ORDER BY j.created_at DESC, j.id DESC LIMIT ${limit}`,
          [p.tenantId, ...where.params],
        );
        return rows.map(toView);
      }),
    );
  }

  async cancelPrediction(caller: Caller, id: string): Promise<JobView> {
    const p = requireScope(caller.principal, 'PREDICT');
    return this.cancel(p.tenantId, id, 'PREDICTION');
  }

  /**
   * Cancels a job that has not ended. Queued: it never runs. Dispatched or running: its node is
   * told at once (pub/sub) and also checks a marker before starting; the attempt's time so far is billed.
   */
  async cancel(tenantId: string, id: string, kind: JobKind): Promise<JobView> {
    if (!isUuid(id)) throw notFound('Job');
    const prev = await this.db.tenant(tenantId, async (m) => {
      const [row]: Array<{ status: JobStatus; attempt: number }> = await m.query(
        `SELECT status, attempt FROM jobs WHERE id = $1 AND tenant_id = $2 AND kind = $3 FOR UPDATE`, [id, tenantId, kind],
      );
      if (!row) throw notFound('Job');
      if (TERMINAL.has(row.status)) return null;
      await m.query(
        `UPDATE jobs SET status = 'CANCELED', completed_at = now(),
                error = jsonb_build_object('code', 'CANCELED', 'message', 'Canceled by the client')
          WHERE id = $1 AND tenant_id = $2`, [id, tenantId],
      );
      return row;
    });
    if (prev) {
      const msg: AdmissionMessage = { op: 'canceled', id };
      await this.redis.multi()
        .set(this.k.canceled(id), '1', 'EX', 24 * 3600)
        .publish(this.k.cancel, JSON.stringify({ jobId: id }))
        .xadd(this.k.admission, 'MAXLEN', '~', 100_000, '*', 'm', JSON.stringify(msg))
        .exec();
    }
    return this.read(tenantId, id, kind);
  }

  async read(tenantId: string, id: string, kind?: JobKind): Promise<JobView> {
    if (!isUuid(id)) throw notFound('Job');
    const rows = await this.db.tenant(tenantId, (m) =>
      m.query(`${SELECT_VIEW} WHERE j.id = $1 AND j.tenant_id = $2 ${kind ? 'AND j.kind = $3' : ''}`, kind ? [id, tenantId, kind] : [id, tenantId]),
    );
    if (!rows[0]) throw notFound(kind === 'PREDICTION' ? 'Prediction' : 'Job');
    return toView(rows[0]);
  }

  /** Updates for one job of the caller's tenant, as views, ending after a terminal state. */
  async *updates(caller: Caller, id: string, kind: JobKind, signal?: AbortSignal): AsyncGenerator<JobView> {
    const p = requireScope(caller.principal, 'READ');
    const stream = this.bus.stream(id, signal);
    const first = await this.read(p.tenantId, id, kind);
    yield first;
    if (TERMINAL.has(first.status)) return;
    for await (const _u of stream) {
      const view = await this.read(p.tenantId, id, kind);
      yield view;
      if (TERMINAL.has(view.status)) return;
    }
  }
}

// Every column but `input` (it can be a multi-megabyte image and no view shows it).
const SELECT_VIEW = `SELECT j.id, j.kind, j.service, j.status, j.progress, j.output, j.error, j.logs, j.attempt, j.node_id, j.hardware,
       j.created_at, j.started_at, j.completed_at, j.metrics, COALESCE((SELECT sum(u.billable_ms) FROM usage_ledger u WHERE u.job_id = j.id AND u.billable), 0)::bigint AS billable_ms FROM jobs j`;

async function insertJob(m: EntityManager, id: string, tenantId: string, job: NewJob): Promise<{ id: string; createdAt: Date; row: Record<string, unknown> }> {
  const rows: Array<{ id: string; created_at: Date }> = await m.query(
    `INSERT INTO jobs (id, tenant_id, kind, service, parent_id, status, hardware, devices, input, idempotency_key,
                       webhook_url, webhook_events, deadline_at, max_attempts)
     VALUES ($1, $2, $3, $4, $5, 'QUEUED', $6, $7, $8::jsonb, $9, $10, $11, CASE WHEN $12::int IS NULL THEN NULL ELSE now() + make_interval(secs => $12::int) END, $13)
     ON CONFLICT (tenant_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
     RETURNING *`,
    [id, tenantId, job.kind, job.service, job.parentId ?? null, job.hardware, job.devices, JSON.stringify(job.input ?? null),
      job.idempotencyKey ?? null, job.webhookUrl ?? null, job.webhookEvents ?? [], job.deadlineSeconds ?? null, job.maxAttempts ?? 3],
  );
  if (rows[0]) return { id: rows[0].id, createdAt: rows[0].created_at, row: rows[0] };
  const [existing]: Array<{ id: string; created_at: Date; service: string }> = await m.query(
    `SELECT id, created_at, service FROM jobs WHERE tenant_id = $1 AND idempotency_key = $2`, [tenantId, job.idempotencyKey],
  );
  if (existing.service !== job.service) {
    throw new AppError(ErrorCode.CONFLICT, 'This idempotency key was used for a different request', { field: 'input.idempotencyKey' });
  }
  return { id: existing.id, createdAt: existing.created_at, row: existing };
}

function toView(r: any): JobView {
  return {
    id: r.id, kind: r.kind, service: r.service, status: r.status, progress: r.progress, output: r.output,
    error: r.error, logs: r.logs, attempt: r.attempt, nodeId: r.node_id, hardware: r.hardware, createdAt: r.created_at,
    startedAt: r.started_at, completedAt: r.completed_at, metrics: r.metrics,
    usage: { seconds: Number(r.billable_ms) / 1000, hardware: r.hardware },
  };
}

/** GraphQL passes absent optional fields as undefined but explicit nulls as null: treat both as absent. */
function stripNulls(v: unknown): unknown {
  if (!v || typeof v !== 'object') return v;
  return Object.fromEntries(Object.entries(v).filter(([, x]) => x !== null && x !== undefined));
}
