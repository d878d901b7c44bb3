import { randomBytes } from 'node:crypto';
import { Queue } from 'bullmq';
import type { Redis } from 'ioredis';
import type { Database } from '../../platform/db/database';
import { badInput, notFound } from '../../platform/errors';
import { WEBHOOK_QUEUE, bullPrefix, terminalWebhookId, webhookJobOptions, type WebhookTask } from '../../platform/queue/messages';
import { TERMINAL, type JobStatus } from './compute.entities';
import { webhookType } from './control-plane/announcer';
import { keysetWhere, paginate, type PageArgs } from '../../platform/pagination';
import { isUuid } from '../../platform/uuid';
import { actorOf, requireScope } from '../tenancy/principal';
import { audit, type Caller } from '../tenancy/tenancy.service';

export interface WebhookDeliveryView {
  id: string;
  jobId: string;
  webhookId: string;
  eventType: string;
  url: string;
  attempt: number;
  statusCode: number | null;
  error: string | null;
  delivered: boolean;
  createdAt: Date;
}

/** Attempts of a resent event: the first at once, then the retry schedule's first waits (5 s, 5 min). */
const RESEND_ATTEMPTS = 3;

/**
 * A tenant's webhook deliveries: every attempt (webhook_deliveries), newest first, for debugging
 * receivers, and resending a job's terminal event once the receiver is fixed.
 */
export class WebhookDeliveriesService {
  private queue: Queue<WebhookTask> | null = null;
  /** BullMQ leaves a connection it was handed open: it is closed here, after the queue. */
  private connection: Redis | null = null;

  constructor(private readonly db: Database, private readonly redis?: Redis, private readonly redisPrefix = 'nimbus') {}

  /**
   * Sends a job's terminal event again (its retries were used up, or the receiver lost it), with
   * the same `webhook-id` as before, so a receiver that did process it can drop the copy. The body
   * is built at delivery from the job as it is then (outputs past their retention are null).
   */
  async resend(caller: Caller, jobId: string): Promise<{ webhookId: string; eventType: string; url: string }> {
    const p = requireScope(caller.principal, 'ADMIN');
    if (!isUuid(jobId)) throw notFound('Job');
    const task = await this.db.tenant(p.tenantId, async (m): Promise<WebhookTask> => {
      const [row]: Array<{ kind: string; status: JobStatus; webhook_url: string | null }> =
        await m.query('SELECT kind, status, webhook_url FROM jobs WHERE id = $1 AND tenant_id = $2', [jobId, p.tenantId]);
      if (!row) throw notFound('Job');
      if (!TERMINAL.has(row.status)) throw badInput('jobId', `the job has not ended (it is ${row.status})`);
      if (!row.webhook_url) throw badInput('jobId', 'the job has no webhookUrl');
      const type = webhookType(row.kind, row.status);
      await audit(m, p.tenantId, actorOf(p), 'webhooks.resent', 'Job', jobId, { eventType: type }, caller.requestId);
      return { tenantId: p.tenantId, jobId, type, url: row.webhook_url, webhookId: terminalWebhookId(jobId, type) };
    });
    // A queue id of its own: the original may still be in BullMQ's kept set, under the webhook-id.
    await this.webhookQueue().add(task.type, task, webhookJobOptions(`${task.webhookId}_resend_${randomBytes(6).toString('hex')}`, RESEND_ATTEMPTS));
    return { webhookId: task.webhookId, eventType: task.type, url: task.url };
  }

  private webhookQueue(): Queue<WebhookTask> {
    if (!this.redis) throw new Error('webhook resends need Redis');
    if (!this.queue) {
      this.connection = this.redis.duplicate({ enableAutoPipelining: false, maxRetriesPerRequest: 3 });
      this.queue = new Queue<WebhookTask>(WEBHOOK_QUEUE, { connection: this.connection, prefix: bullPrefix(this.redisPrefix) });
    }
    return this.queue;
  }

  async close(): Promise<void> {
    await this.queue?.close();
    this.connection?.disconnect();
  }

  async list(caller: Caller, args: PageArgs & { jobId?: string | null }) {
    const p = requireScope(caller.principal, 'READ');
    if (args.jobId != null && !isUuid(args.jobId)) throw notFound('Job');
    return this.db.tenant(p.tenantId, (m) =>
      paginate<WebhookDeliveryView>(args, async (after, limit) => {
        const where = keysetWhere(after, 3, 'webhook_deliveries');
        const rows: Array<Record<string, any>> = await m.query(
          `SELECT id, job_id, webhook_id, event_type, url, attempt, status_code, error, delivered, created_at
             FROM webhook_deliveries
            WHERE tenant_id = $1 AND ($2::uuid IS NULL OR job_id = $2) AND ${where.sql}
            ORDER BY created_at DESC, id DESC LIMIT ${limit}`,
          [p.tenantId, args.jobId ?? null, ...where.params],
        );
        return rows.map((r) => ({
          id: r.id, jobId: r.job_id, webhookId: r.webhook_id, eventType: r.event_type, url: r.url, attempt: r.attempt,
          statusCode: r.status_code, error: r.error, delivered: r.delivered, createdAt: r.created_at,
        }));
      }),
    );
  }
}
