import { randomBytes } from 'node:crypto';
import { lookup } from 'node:dns/promises';
import http from 'node:http';
import https from 'node:https';
import type { LookupAddress } from 'node:dns';
import { Queue, Worker, type Job as BullJob } from 'bullmq';
import { bareHost, isPublicAddress, pinnedLookup } from '../../services/ip-policy';
import { WEBHOOK_QUEUE, bullPrefix, terminalWebhookId, webhookJobOptions, type WebhookTask } from '../../../platform/queue/messages';
import { SIGNING_SECRET_COLUMNS, signatureHeader, type SigningSecrets } from '../webhook-signing';
import type { ControlPlaneContext } from './context';

const PROGRESS_MIN_INTERVAL_MS = 2000;
/** A tenant with this many events outstanding has its further events queued behind others' (see enqueue). */
const FAIR_BACKLOG = 2;
/** Outstanding events tracked per tenant, at most (beyond, its events simply take the lowest priority). */
const TRACKED_PER_TENANT = 10_000;
/** BullMQ's lowest priority. */
const LOWEST_PRIORITY = 2_097_152;
const TIMEOUT_MS = 10_000;
/**
 * Waits before each retry, in units of `webhookBackoffMs` (1 s by default): 5 s, 5 min, 30 min,
 * 2 h, 5 h, 10 h, 10 h (the schedule Svix uses), so a receiver that is down for most of a day
 * still gets its events; the last wait repeats if `webhookMaxAttempts` asks for more.
 */
export const WEBHOOK_RETRY_SCHEDULE = [5, 300, 1800, 7200, 18_000, 36_000, 36_000];

/** The wait before retry `n` (1-based), with ±10% jitter so retries of many events spread out. */
export function webhookRetryDelayMs(n: number, unitMs: number, random = Math.random): number {
  const step = WEBHOOK_RETRY_SCHEDULE[Math.min(Math.max(n, 1), WEBHOOK_RETRY_SCHEDULE.length) - 1];
  return Math.round(step * unitMs * (0.9 + 0.2 * random()));
}

/** Worker settings of a webhook queue: the `custom` backoff of webhookJobOptions is this schedule. */
export const webhookWorkerSettings = (unitMs: number) => ({ backoffStrategy: (attemptsMade: number) => webhookRetryDelayMs(attemptsMade, unitMs) });

/**
 * Delivers job events to the tenant's webhook URL: signed (Standard Webhooks), redirects not
 * followed, private addresses refused (SSRF), retried by BullMQ on WEBHOOK_RETRY_SCHEDULE (about a
 * day in all), and every attempt recorded in webhook_deliveries.
 */
export class WebhookSender {
  private queue: Queue<WebhookTask> | null = null;
  private worker: Worker<WebhookTask> | null = null;
  private readonly lastProgress = new Map<string, number>();

  constructor(private readonly cx: ControlPlaneContext) {}

  start(): void {
    const prefix = bullPrefix(this.cx.prefix);
    this.queue = new Queue<WebhookTask>(WEBHOOK_QUEUE, { connection: this.cx.connect('webhooks-q'), prefix });
    this.worker = new Worker<WebhookTask>(WEBHOOK_QUEUE, (job) => this.deliver(job), {
      connection: this.cx.connect('webhooks-w'), prefix, concurrency: this.cx.settings.webhookConcurrency,
      settings: webhookWorkerSettings(this.cx.settings.webhookBackoffMs),
    });
    this.worker.on('error', (err) => this.cx.log.warn({ err: err.message }, 'webhook worker error'));
    this.worker.on('completed', (job) => this.settled(job));
    this.worker.on('failed', (job) => {
      if (job && job.attemptsMade >= (job.opts.attempts ?? 1)) this.settled(job); // its last attempt
    });
    const queue = this.queue;
    this.cx.metrics.webhookBacklog = async () => {
      const c = await queue.getJobCounts('waiting', 'delayed', 'prioritized');
      return { waiting: (c.waiting ?? 0) + (c.prioritized ?? 0), delayed: c.delayed ?? 0 };
    };
  }

  async stop(): Promise<void> {
    this.cx.metrics.webhookBacklog = null;
    await this.worker?.close();
    await this.queue?.close();
  }

  async enqueue(t: { tenantId: string; jobId: string; type: string; url: string; throttle?: boolean }): Promise<void> {
    if (t.throttle) {
      const last = this.lastProgress.get(t.jobId) ?? 0;
      if (Date.now() - last < PROGRESS_MIN_INTERVAL_MS) return;
      this.lastProgress.set(t.jobId, Date.now());
    } else {
      this.lastProgress.delete(t.jobId);
    }
    // Terminal events have a deterministic id, so a replayed completion never sends a second event.
    const webhookId = t.throttle ? `msg_${t.jobId}_${t.type}_${randomBytes(4).toString('hex')}` : terminalWebhookId(t.jobId, t.type);
    // Fairness between tenants: the delivery slots are shared, and a tenant whose receiver is slow
    // or dead piles up events (and their retries). Its events beyond FAIR_BACKLOG outstanding are
    // prioritized by that backlog, and BullMQ takes every unprioritized event first, then the
    // smallest backlogs: others' events no longer queue behind it, while a tenant alone still
    // gets every slot. (Counted in this process: a restart starts from zero.)
    let outstanding = this.outstanding.get(t.tenantId);
    if (!outstanding) this.outstanding.set(t.tenantId, (outstanding = new Set()));
    const backlog = outstanding.has(webhookId) ? outstanding.size - 1 : outstanding.size;
    if (outstanding.size < TRACKED_PER_TENANT) outstanding.add(webhookId);
    const priority = backlog < FAIR_BACKLOG ? undefined : outstanding.size >= TRACKED_PER_TENANT ? LOWEST_PRIORITY : backlog;
    const job = await this.queue!.add(t.type, { ...t, webhookId }, {
      ...webhookJobOptions(webhookId, this.cx.settings.webhookMaxAttempts), ...(priority ? { priority } : {}),
    });
    // An id BullMQ still holds as delivered (or given up) adds nothing and will never complete
    // again (a replayed end, the sweep racing a delivery): it is not outstanding.
    if (!outstanding.has(webhookId)) return;
    const state = await job.getState().catch(() => 'unknown');
    if (state === 'completed' || state === 'failed') this.settled(job);
  }

  /** Events not yet delivered nor given up, per tenant (by webhook-id): what `enqueue` weighs a tenant's new events by. */
  private readonly outstanding = new Map<string, Set<string>>();

  private settled(job: BullJob<WebhookTask>): void {
    const set = this.outstanding.get(job.data.tenantId);
    if (!set) return;
    set.delete(job.data.webhookId);
    if (set.size === 0) this.outstanding.delete(job.data.tenantId);
  }

  private async deliver(job: BullJob<WebhookTask>): Promise<void> {
    const t = job.data;
    const [tenant]: SigningSecrets[] = await this.cx.db.query(`SELECT ${SIGNING_SECRET_COLUMNS} FROM tenants WHERE id = $1`, [t.tenantId]);
    const [row]: any[] = await this.cx.db.query(
      `SELECT j.id, j.kind, j.status, j.progress, j.output, j.error, j.created_at, j.started_at, j.completed_at, j.hardware,
              COALESCE((SELECT sum(billable_ms) FROM usage_ledger u WHERE u.job_id = j.id AND u.billable), 0)::bigint AS billable_ms
         FROM jobs j WHERE j.id = $1`, [t.jobId]);
    if (!tenant || !row) return;
    const timestamp = Math.floor(Date.now() / 1000);
    const body = JSON.stringify({
      type: t.type,
      timestamp: new Date(timestamp * 1000).toISOString(),
      data: {
        id: row.id, status: row.status, progress: row.progress, output: row.output, error: row.error,
        createdAt: row.created_at, startedAt: row.started_at, completedAt: row.completed_at,
        usage: { seconds: Number(row.billable_ms) / 1000, hardware: row.hardware },
      },
    });
    let statusCode: number | null = null;
    let error: string | null = null;
    try {
      statusCode = await postSigned(t.url, tenant, t.webhookId, timestamp, body, this.cx.settings);
      if (statusCode < 200 || statusCode >= 300) error = `HTTP ${statusCode}${statusCode >= 300 && statusCode < 400 ? ' (redirects are not followed)' : ''}`;
    } catch (err) {
      error = (err as Error).message;
    }
    this.cx.metrics.webhookAttempts.inc({ outcome: error === null ? 'delivered' : 'failed' });
    await this.cx.db.query(
      `INSERT INTO webhook_deliveries (tenant_id, job_id, webhook_id, event_type, url, attempt, status_code, error, delivered)
       VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)`,
      [t.tenantId, t.jobId, t.webhookId, t.type, t.url, job.attemptsMade + 1, statusCode, error, error === null],
    );
    if (error) throw new Error(error);
  }
}

/**
 * One signed delivery (Standard Webhooks: `webhook-id`, `webhook-timestamp`, and a signature per
 * live secret) of a body whose `timestamp` is `timestamp`; answers the HTTP status.
 */
export function postSigned(
  url: string, secrets: SigningSecrets, webhookId: string, timestamp: number, body: string,
  settings: { webhookAllowPrivate: boolean; webhookTimeoutMs: number },
): Promise<number> {
  return post(url, {
    'content-type': 'application/json',
    'user-agent': 'Nimbus-Webhooks/1',
    'webhook-id': webhookId,
    'webhook-timestamp': String(timestamp),
    'webhook-signature': signatureHeader(secrets, webhookId, timestamp, body),
  }, body, settings.webhookAllowPrivate, settings.webhookTimeoutMs);
}

/**
 * POSTs once; connects only to an address that passed the SSRF check (no DNS rebinding window).
 * The whole attempt, from the lookup to the response's status line, has `timeoutMs`: a receiver
 * that trickles bytes (never idle long enough for a socket timeout) cannot hold a delivery slot,
 * which every tenant's webhooks share, for longer. The response body is not read.
 */
export async function post(rawUrl: string, headers: Record<string, string>, body: string, allowPrivate: boolean, timeoutMs = TIMEOUT_MS): Promise<number> {
  const url = new URL(rawUrl);
  const deadline = Date.now() + timeoutMs;
  const host = bareHost(url.hostname);
  // The deadline covers the lookup too: a resolver that never answers must not hold a delivery slot.
  let dnsTimer: NodeJS.Timeout | undefined;
  const addresses: LookupAddress[] = await Promise.race([
    lookup(host, { all: true }),
    new Promise<never>((_, reject) => { dnsTimer = setTimeout(() => reject(new Error(`timed out resolving ${host}`)), timeoutMs); }),
  ]).finally(() => clearTimeout(dnsTimer));
  const allowed = addresses.filter((a) => allowPrivate || isPublicAddress(a.address));
  if (allowed.length === 0) throw new Error(`refused: ${host} resolves to a private or reserved address`);
  const client = url.protocol === 'https:' ? https : http;
  return new Promise<number>((resolve, reject) => {
    const req = client.request(url, {
      method: 'POST', headers: { ...headers, 'content-length': Buffer.byteLength(body) },
      lookup: pinnedLookup(allowed),
    }, (res) => {
      clearTimeout(timer);
      resolve(res.statusCode ?? 0);
      res.destroy(); // the status is the answer; a body, however long, is not waited for
    });
    const timer = setTimeout(() => req.destroy(new Error('timed out')), Math.max(0, deadline - Date.now()));
    req.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    req.end(body);
  });
}
