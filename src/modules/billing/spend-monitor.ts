import { Queue, Worker, type Job as BullJob } from 'bullmq';
import { bullPrefix, webhookJobOptions, type AdmissionMessage } from '../../platform/queue/messages';
import type { ControlPlaneContext } from '../compute/control-plane/context';
import { postSigned, webhookWorkerSettings } from '../compute/control-plane/webhooks';
import { SIGNING_SECRET_COLUMNS, type SigningSecrets } from '../compute/webhook-signing';
import type { BillingMetrics } from './billing.metrics';
import { MS_PER_MINUTE, PICO, money, roundCents } from './money';
import type { PriceBook, SubscribedPrices } from './price-book';
import { periodCosts, periodOf } from './spend';

export const SPEND_THRESHOLDS = [80, 100] as const;

interface NotificationTask {
  tenantId: string;
  period: string;
  threshold: number;
  spendLimitCents: number;
  periodCostCents: number;
  webhookId: string;
}


/**
 * Spend limits in the control plane, checked on each pass of the meter reporter's loop:
 * - notifications at 80% and 100% of a tenant's limit, once per period and threshold
 *   (`billing_notifications`): an audit event `billing.spend_threshold` and a signed POST to the
 *   tenant's webhook URL (Standard Webhooks, retried with backoff);
 * - a running job is canceled when the month's cost, including what running jobs have accrued,
 *   passes the limit by more than one minute of that job's price.
 */
export class SpendMonitor {
  private queue: Queue<NotificationTask> | null = null;
  private worker: Worker<NotificationTask> | null = null;
  private lastRun = 0;

  constructor(
    private readonly cx: ControlPlaneContext,
    private readonly prices: PriceBook,
    private readonly metrics: BillingMetrics | null = null,
    private readonly minIntervalMs = 1000,
  ) {}

  start(): void {
    const prefix = bullPrefix(this.cx.prefix);
    this.queue = new Queue<NotificationTask>('billing-notifications', { connection: this.cx.connect('billing-q'), prefix });
    this.worker = new Worker<NotificationTask>('billing-notifications', (job) => this.deliver(job), {
      connection: this.cx.connect('billing-w'), prefix, concurrency: 4,
      settings: webhookWorkerSettings(this.cx.settings.webhookBackoffMs),
    });
    this.worker.on('error', (err) => this.cx.log.warn({ err: err.message }, 'billing notification worker error'));
  }

  async stop(): Promise<void> {
    await this.worker?.close();
    await this.queue?.close();
  }

  /** Throttled to one check per `minIntervalMs`, however often the loop calls. */
  async check(): Promise<void> {
    if (Date.now() - this.lastRun < this.minIntervalMs) return;
    this.lastRun = Date.now();
    const tenants: Array<{ id: string; spend_limit_cents: number; subscribed_prices: SubscribedPrices }> = await this.cx.db.query(
      'SELECT id, spend_limit_cents, subscribed_prices FROM tenants WHERE spend_limit_cents IS NOT NULL',
    );
    if (tenants.length === 0) return;
    const ids = tenants.map((t) => t.id);
    const costs = await periodCosts(this.cx.db.query.bind(this.cx.db), this.prices, ids);
    // Attempts running on nodes (a training job's own row runs nowhere and is never billed: only its trials are).
    const running: Array<{ id: string; tenant_id: string; kind: string; hardware: string; devices: number; ms: string }> = await this.cx.db.query(
      `SELECT id, tenant_id, kind, hardware, devices, greatest(0, (extract(epoch FROM now() - started_at) * 1000)::bigint)::text AS ms
         FROM jobs WHERE status = 'RUNNING' AND started_at IS NOT NULL AND node_id IS NOT NULL AND tenant_id = ANY($1::uuid[])`,
      [ids],
    );
    const period = periodOf(new Date());
    for (const t of tenants) {
      const limit = BigInt(t.spend_limit_cents) * PICO;
      const cost = costs.get(t.id) ?? 0n;
      if (cost > 0n) {
        for (const threshold of SPEND_THRESHOLDS) {
          if (cost * 100n >= limit * BigInt(threshold)) await this.notify(t.id, period.key, threshold, t.spend_limit_cents, roundCents(cost));
        }
      }
      const mine = running.filter((j) => j.tenant_id === t.id);
      if (mine.length === 0) continue;
      let total = cost;
      const perMs = new Map<string, bigint>();
      for (const j of mine) {
        const p = (await this.prices.priceFor(t.subscribed_prices, j.kind, j.hardware)).perMsPico;
        perMs.set(j.id, p);
        total += BigInt(j.devices) * BigInt(j.ms) * p;
      }
      for (const j of mine) {
        const oneMinute = BigInt(j.devices) * MS_PER_MINUTE * perMs.get(j.id)!;
        if (total > limit + oneMinute) await this.cancel(j.id, t.id, t.spend_limit_cents, roundCents(total));
      }
    }
  }

  /**
   * Once per tenant, period and threshold: the notification row, its audit event and (with a
   * webhook URL) the queued webhook commit together: the webhook is queued inside the transaction,
   * so a failed enqueue (Redis down, a crash) rolls the row back and the next check tries again,
   * instead of the row saying "told" with nothing sent. A commit that fails after the enqueue sends
   * it once all the same: the next check queues it again under the same stable id, which BullMQ
   * keeps once.
   */
  private async notify(tenantId: string, period: string, threshold: number, spendLimitCents: number, periodCostCents: number): Promise<void> {
    const notified = await this.cx.db.transaction(async (m) => {
      const inserted = await m.query(
        `INSERT INTO billing_notifications (tenant_id, period, threshold) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING RETURNING threshold`,
        [tenantId, period, threshold],
      );
      if (inserted.length === 0) return false;
      await m.query(
        `INSERT INTO audit_events (tenant_id, actor_type, actor_id, action, object_type, object_id, data)
         VALUES ($1::uuid, 'SYSTEM', NULL, 'billing.spend_threshold', 'Tenant', $1::text, $2::jsonb)`,
        [tenantId, JSON.stringify({ period, thresholdPercent: threshold, spendLimitCents, periodCostCents })],
      );
      const [t]: Array<{ webhook_url: string | null }> = await m.query('SELECT webhook_url FROM tenants WHERE id = $1', [tenantId]);
      if (t?.webhook_url) {
        const webhookId = `msg_spend_${tenantId}_${period}_${threshold}`;
        await this.queue!.add('spend_threshold', { tenantId, period, threshold, spendLimitCents, periodCostCents, webhookId },
          webhookJobOptions(webhookId, this.cx.settings.webhookMaxAttempts));
      }
      return true;
    });
    if (notified) this.metrics?.spendNotifications.inc({ threshold: String(threshold) });
  }

  private async deliver(job: BullJob<NotificationTask>): Promise<void> {
    const t = job.data;
    const [tenant]: Array<SigningSecrets & { webhook_url: string | null }> = await this.cx.db.query(
      `SELECT webhook_url, ${SIGNING_SECRET_COLUMNS} FROM tenants WHERE id = $1`, [t.tenantId],
    );
    if (!tenant?.webhook_url) return;
    const timestamp = Math.floor(Date.now() / 1000);
    const body = JSON.stringify({
      type: 'billing.spend_threshold',
      timestamp: new Date(timestamp * 1000).toISOString(),
      data: { period: t.period, thresholdPercent: t.threshold, spendLimit: money(t.spendLimitCents), periodCost: money(t.periodCostCents) },
    });
    const status = await postSigned(tenant.webhook_url, tenant, t.webhookId, timestamp, body, this.cx.settings);
    if (status < 200 || status >= 300) throw new Error(`HTTP ${status}`);
  }

  /** Cancels like the API does (the node is told at once) with SPEND_LIMIT_REACHED; the time so far is billed. */
  private async cancel(jobId: string, tenantId: string, spendLimitCents: number, periodCostCents: number): Promise<void> {
    const canceled = await this.cx.db.transaction(async (m) => {
      const [rows]: [Array<{ id: string }>, number] = await m.query(
        `UPDATE jobs SET status = 'CANCELED', completed_at = now(),
                error = jsonb_build_object('code', 'SPEND_LIMIT_REACHED', 'message', 'Canceled: this month''s spend limit was passed by more than a minute of this job''s price')
          WHERE id = $1 AND status IN ('ADMITTED','RUNNING') RETURNING id`,
        [jobId],
      );
      if (rows.length === 0) return false;
      await m.query(
        `INSERT INTO audit_events (tenant_id, actor_type, actor_id, action, object_type, object_id, data)
         VALUES ($1, 'SYSTEM', NULL, 'billing.job_canceled', 'Job', $2, $3::jsonb)`,
        [tenantId, jobId, JSON.stringify({ reason: 'SPEND_LIMIT_REACHED', spendLimitCents, periodCostCents })],
      );
      return true;
    });
    if (!canceled) return;
    this.metrics?.spendCancellations.inc();
    this.cx.log.info({ job: jobId, tenant: tenantId }, 'running job canceled: spend limit passed');
    const msg: AdmissionMessage = { op: 'canceled', id: jobId };
    await this.cx.redis.multi()
      .set(this.cx.keys.canceled(jobId), '1', 'EX', 24 * 3600)
      .publish(this.cx.keys.cancel, JSON.stringify({ jobId }))
      .xadd(this.cx.keys.admission, 'MAXLEN', '~', 100_000, '*', 'm', JSON.stringify(msg))
      .exec();
  }
}
