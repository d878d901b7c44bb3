import { randomUUID } from 'node:crypto';
import type { Redis } from 'ioredis';
import { z } from 'zod';
import type { Database } from '../../platform/db/database';
import { statement } from '../../platform/db/sql';
import { notFound } from '../../platform/errors';
import { keysetWhere, paginate, type PageArgs } from '../../platform/pagination';
import type { AdmissionMessage, keys } from '../../platform/queue/messages';
import { isUuid } from '../../platform/uuid';
import { parseInput, requireHttpsWebhook, webhookUrlSchema } from '../../platform/validation';
import { requireScope, type Principal } from '../tenancy/principal';
import type { Caller } from '../tenancy/tenancy.service';
import { TERMINAL, type Hardware, type JobKind, type JobStatus } from './compute.entities';
import type { JobUpdateBus, Waiter } from './job-updates';
import { JobInserter } from './job-inserter';
import { SELECT_VIEW, toView, type JobView } from './job-view';
import { predictionFingerprint } from './request-fingerprint';

const READ_VIEW = statement('jobs.read', `${SELECT_VIEW} WHERE j.id = $1 AND j.tenant_id = $2`);
const READ_VIEW_OF_KIND = statement('jobs.read-kind', `${SELECT_VIEW} WHERE j.id = $1 AND j.tenant_id = $2 AND j.kind = $3`);

export type { JobView } from './job-view';

/** What a job is to run: resolved from a service id or a deployment, with its input validated. */
export interface ResolvedTarget {
  service: string;
  input: unknown;
  hardware: Hardware;
  devices: number;
  /** Worst-case price of the job, for spend-limit admission. */
  maxSeconds?: number;
  /** Releases what resolving stored for the job (an input image), when no job is created for it. */
  discard?: () => Promise<void>;
}

export interface NewJob extends ResolvedTarget {
  kind: JobKind;
  parentId?: string | null;
  idempotencyKey?: string | null;
  webhookUrl?: string | null;
  webhookEvents?: string[];
  deadlineSeconds?: number | null;
  maxAttempts?: number;
  /**
   * Fingerprint of the client's request (`request-fingerprint.ts`), with an idempotency key: a
   * later request with the key and another fingerprint is refused (CONFLICT). Absent: only the
   * service is compared.
   */
  requestHash?: string | null;
}

/** Checks run before a job is accepted (payment status, spend limit); they throw AppErrors. */
export type AdmissionGuard = (tenantId: string, job: NewJob) => Promise<void>;
export type TargetResolver = (caller: Principal, ref: { service?: string; deployment?: string }, input: unknown) => Promise<ResolvedTarget>;

const WEBHOOK_EVENTS = ['STARTED', 'PROGRESS'] as const;
/** A subscription with no update for this long reads its job again (a pub/sub message may be lost). */
const UPDATES_RECHECK_MS = 5000;

const predictSchema = z
  .strictObject({
    service: z.string().min(1).max(100).optional(),
    deployment: z.string().min(1).max(100).optional(),
    input: z.unknown().refine((v) => v !== undefined && v !== null, 'is required'),
    wait: z.number().int().min(0).max(60).default(30),
    deadlineSeconds: z.number().int().min(1).max(7 * 24 * 3600).optional(),
    webhookUrl: webhookUrlSchema.optional(),
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
    private readonly opts: {
      allowPlainHttpWebhooks: boolean;
      /** Requests `predict(wait:)` may hold at once per tenant in this process (the rest answer at once). */
      heldWaitsLimit?: (tenantId: string) => Promise<number>;
    },
  ) {
    this.inserter = new JobInserter(db, redis, k);
  }

  private readonly inserter: JobInserter;

  async predict(caller: Caller, raw: unknown): Promise<JobView> {
    const p = requireScope(caller.principal, 'PREDICT');
    const input = parseInput(predictSchema, stripNulls(raw));
    requireHttpsWebhook('input.webhookUrl', input.webhookUrl, this.opts.allowPlainHttpWebhooks);
    // Of the input as the client sent it, before resolving prepares it (stores images in its place).
    const requestHash = input.idempotencyKey ? predictionFingerprint(input) : null;
    const { discard, ...target } = await this.resolveTarget(p, { service: input.service, deployment: input.deployment }, input.input);
    let created = false;
    try {
      return await this.submit(p.tenantId, {
        ...target, kind: 'PREDICTION', idempotencyKey: input.idempotencyKey, webhookUrl: input.webhookUrl,
        webhookEvents: input.webhookEvents, deadlineSeconds: input.deadlineSeconds, requestHash,
      }, input.wait, () => (created = true), caller.signal);
    } finally {
      // Refused (spend limit, payment, conflict) or a repeat of an earlier job: nothing will read it.
      if (!created) await discard?.();
    }
  }

  /** Creates (or finds, by idempotency key) a job, wakes the admitter and optionally waits for its end. */
  async submit(tenantId: string, job: NewJob, waitSeconds = 0, onCreated?: () => void, signal?: AbortSignal): Promise<JobView> {
    for (const guard of this.guards) await guard(tenantId, job);
    // Past the tenant's number of held requests, a call is answered at once, as with wait: 0.
    const release = waitSeconds > 0 ? await this.holdWait(tenantId) : null;
    try {
      return await this.submitAndWait(tenantId, job, release ? waitSeconds : 0, onCreated, signal);
    } finally {
      release?.();
    }
  }

  /**
   * A slot among the requests this process holds for the tenant (`predict(wait:)`), or null when
   * they are all taken: each held request keeps a connection, a listener and a re-read every few
   * seconds, so one tenant cannot pile up tens of thousands of them.
   */
  private async holdWait(tenantId: string): Promise<(() => void) | null> {
    const limit = await this.opts.heldWaitsLimit?.(tenantId) ?? Number.POSITIVE_INFINITY;
    const n = this.heldWaits.get(tenantId) ?? 0;
    if (n >= limit) return null;
    this.heldWaits.set(tenantId, n + 1);
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const left = (this.heldWaits.get(tenantId) ?? 1) - 1;
      if (left > 0) this.heldWaits.set(tenantId, left);
      else this.heldWaits.delete(tenantId);
    };
  }

  private readonly heldWaits = new Map<string, number>();

  private async submitAndWait(tenantId: string, job: NewJob, waitSeconds: number, onCreated?: () => void, signal?: AbortSignal): Promise<JobView> {
    const id = randomUUID();
    const waiter = waitSeconds > 0 ? this.bus.waiter(id, (u) => TERMINAL.has(u.status as JobStatus)) : null;
    // A waited-for job's id is first told with its end (a durable commit) or after the wait
    // times out (barrier below), so its insert need not wait for the disk (JobInserter.insert).
    const created = await this.inserter.insert(tenantId, id, job, { durable: !waiter }).catch((err) => {
      waiter?.cancel();
      throw err;
    });
    if (!created.created) {
      // Same idempotency key: the earlier job, never a second one.
      waiter?.cancel();
      return this.waitAndRead(tenantId, created.id, waitSeconds, signal);
    }
    onCreated?.();
    if (!waiter) return toView({ ...created.row, billable_ms: 0 }); // as inserted: no second read
    // The admitter hears of the job only now: an end published after this is seen if Redis had
    // taken the subscription by now, else the job is read once it has.
    waiter.recheckUnlessSubscribed();
    const ended = await this.awaitEnd(tenantId, id, waiter, waitSeconds * 1000, signal);
    if (ended) return ended;
    await this.inserter.barrier();
    return this.read(tenantId, id);
  }

  private async waitAndRead(tenantId: string, id: string, waitSeconds: number, signal?: AbortSignal): Promise<JobView> {
    if (waitSeconds > 0) {
      const waiter = this.bus.waiter(id, (u) => TERMINAL.has(u.status as JobStatus));
      waiter.recheckUnlessSubscribed(); // an end between this read and the subscription is read again
      const now = await this.read(tenantId, id).catch((err) => {
        waiter.cancel();
        throw err;
      });
      if (TERMINAL.has(now.status)) {
        waiter.cancel();
        return now;
      }
      const ended = await this.awaitEnd(tenantId, id, waiter, waitSeconds * 1000, signal);
      if (ended) return ended;
    }
    // The earlier request may still be waiting for this job, inserted unflushed: flush before telling.
    await this.inserter.barrier();
    return this.read(tenantId, id);
  }

  /**
   * The job's terminal view once its end is announced, or null after `ms`. Announcements come over
   * Redis pub/sub, which drops what is published while this process reconnects: every few seconds
   * without one the job is read again, so a lost announcement costs seconds, not the whole wait.
   * A client that goes away (`signal`) ends the wait at once: its held-wait slot, subscription and
   * re-reads are not kept for nobody until the wait runs out.
   */
  private async awaitEnd(tenantId: string, id: string, waiter: Waiter, ms: number, signal?: AbortSignal): Promise<JobView | null> {
    const deadline = Date.now() + ms;
    const gone = () => waiter.interrupt();
    signal?.addEventListener('abort', gone, { once: true });
    try {
      for (;;) {
        const left = deadline - Date.now();
        if (left <= 0 || signal?.aborted) return null;
        const u = await waiter.next(Math.min(left, UPDATES_RECHECK_MS));
        if (u) return u.row ? toView(u.row) : this.read(tenantId, id);
        if (Date.now() >= deadline || signal?.aborted) return null;
        const now = await this.read(tenantId, id);
        if (TERMINAL.has(now.status)) return now;
      }
    } finally {
      signal?.removeEventListener('abort', gone);
      waiter.cancel();
    }
  }

  async prediction(caller: Caller, id: string): Promise<JobView> {
    const p = requireScope(caller.principal, 'READ');
    return this.read(p.tenantId, id, 'PREDICTION');
  }

  async predictions(caller: Caller, args: PageArgs) {
    const p = requireScope(caller.principal, 'READ');
    return this.db.tenant(p.tenantId, (m) =>
      paginate<JobView>(args, async (after, limit) => {
        const where = keysetWhere(after, 2, 'jobs', 'j');
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
      // The cancel is committed: if telling Redis fails, the reconciler still stops the attempt on
      // its node (it compares what nodes run with Postgres) and the admitter drops the job when it
      // finds it no longer queued. So the caller is answered with the cancelled job either way.
      const msg: AdmissionMessage = { op: 'canceled', id };
      await this.redis.multi()
        .set(this.k.canceled(id), '1', 'EX', 24 * 3600)
        .publish(this.k.cancel, JSON.stringify({ jobId: id }))
        .xadd(this.k.admission, 'MAXLEN', '~', 100_000, '*', 'm', JSON.stringify(msg))
        .exec()
        .catch(() => undefined);
    }
    return this.read(tenantId, id, kind);
  }

  /**
   * One job of the tenant as a view. Read on every poll of a job: a prepared statement in a
   * tenant transaction opened with one round trip (`Database.tenantQuery`).
   */
  async read(tenantId: string, id: string, kind?: JobKind): Promise<JobView> {
    if (!isUuid(id)) throw notFound('Job');
    const rows = await this.db.tenantQuery(tenantId, kind ? READ_VIEW_OF_KIND : READ_VIEW, kind ? [id, tenantId, kind] : [id, tenantId]);
    if (!rows[0]) throw notFound(kind === 'PREDICTION' ? 'Prediction' : 'Job');
    return toView(rows[0]);
  }

  /**
   * Updates for one job of the caller's tenant, as views, ending after a terminal state. Updates
   * come over Redis pub/sub, which drops what is published while a subscriber reconnects: after
   * `recheckMs` without one the job is read again, so a lost terminal update delays the end, never
   * hangs the subscription.
   */
  async *updates(caller: Caller, id: string, kind: JobKind, signal?: AbortSignal, recheckMs = UPDATES_RECHECK_MS): AsyncGenerator<JobView> {
    const p = requireScope(caller.principal, 'READ');
    const stream = this.bus.stream(id, signal, recheckMs);
    try {
      stream.recheckUnlessSubscribed(); // an update between this read and the subscription: read again
      let last = await this.read(p.tenantId, id, kind);
      yield last;
      if (TERMINAL.has(last.status)) return;
      for await (const u of stream) {
        const view = u?.row ? toView(u.row) : await this.read(p.tenantId, id, kind);
        if (u === null && view.status === last.status && view.progress === last.progress) continue;
        last = view;
        yield view;
        if (TERMINAL.has(view.status)) return;
      }
    } finally {
      stream.cancel(); // also when it was never iterated (a failed first read, an early unsubscribe)
    }
  }
}

/** GraphQL passes absent optional fields as undefined but explicit nulls as null: treat both as absent. */
function stripNulls(v: unknown): unknown {
  if (!v || typeof v !== 'object') return v;
  return Object.fromEntries(Object.entries(v).filter(([, x]) => x !== null && x !== undefined));
}
