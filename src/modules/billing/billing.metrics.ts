import { Counter, Gauge, type Registry } from 'prom-client';

type Query = (sql: string, params?: unknown[]) => Promise<any[]>;

/**
 * Billing's metrics, for operators: what the meter reporter sends to Stripe and how far it is
 * behind the ledger (the backlog gauges are read from Postgres when scraped, not on every pass),
 * and what spend limits did.
 */
export class BillingMetrics {
  /** Meter events by outcome: accepted, duplicate (Stripe had it: a resend), rate_limited, failed. */
  readonly meterEvents: Counter<'outcome'>;
  readonly ledgerRowsClaimed: Counter;
  readonly spendNotifications: Counter<'threshold'>;
  readonly spendCancellations: Counter;

  constructor(registry: Registry, query: Query) {
    const registers = [registry];
    this.meterEvents = new Counter({
      name: 'nimbus_billing_meter_events_total', help: 'Meter events sent to Stripe, by outcome (accepted, duplicate, rate_limited, failed)',
      labelNames: ['outcome'], registers,
    });
    this.ledgerRowsClaimed = new Counter({
      name: 'nimbus_billing_ledger_rows_claimed_total', help: 'Billable ledger rows grouped into meter reports', registers,
    });
    this.spendNotifications = new Counter({
      name: 'nimbus_billing_spend_notifications_total', help: 'Spend-limit threshold notifications (80% and 100%)', labelNames: ['threshold'], registers,
    });
    this.spendCancellations = new Counter({
      name: 'nimbus_billing_spend_cancellations_total', help: 'Running jobs cancelled because their tenant passed its spend limit', registers,
    });
    // One query per scrape fills all three backlog gauges.
    // A database that cannot be read gives NaN, not a failed scrape: the other metrics matter most then.
    let reading: Promise<Backlog> | null = null;
    const backlog = () => (reading ??= readBacklog(query)
      .catch((): Backlog => ({ rows: NaN, ms: NaN, lagSeconds: NaN }))
      .finally(() => setTimeout(() => (reading = null), 0)));
    new Gauge({
      name: 'nimbus_billing_unreported_rows', help: 'Billable ledger rows not yet accepted by Stripe (unclaimed, or in a pending report)', registers,
      async collect() {
        this.set((await backlog()).rows);
      },
    });
    new Gauge({
      name: 'nimbus_billing_unreported_usage_seconds', help: 'Billable device-seconds not yet accepted by Stripe', registers,
      async collect() {
        this.set((await backlog()).ms / 1000);
      },
    });
    new Gauge({
      name: 'nimbus_billing_lag_seconds', help: 'Age of the oldest billable usage not yet accepted by Stripe (0 when none)', registers,
      async collect() {
        this.set((await backlog()).lagSeconds);
      },
    });
  }
}

interface Backlog {
  rows: number;
  ms: number;
  lagSeconds: number;
}

/** Both halves of the outbox use partial indexes (unclaimed billable rows; PENDING reports). */
async function readBacklog(query: Query): Promise<Backlog> {
  const [r] = await query(
    `WITH unclaimed AS (
       SELECT count(*) AS n, COALESCE(sum(billable_ms), 0) AS ms, min(created_at) AS oldest
         FROM usage_ledger WHERE billable AND report_id IS NULL
     ), pending AS (
       SELECT count(*) AS n, COALESCE(sum(value), 0) AS ms, min(created_at) AS oldest
         FROM meter_reports WHERE status = 'PENDING'
     ), pending_rows AS (
       SELECT count(*) AS n FROM usage_ledger l JOIN meter_reports r ON r.id = l.report_id WHERE r.status = 'PENDING'
     )
     SELECT (unclaimed.n + pending_rows.n)::bigint AS rows, (unclaimed.ms + pending.ms)::bigint AS ms,
            COALESCE(extract(epoch FROM now() - least(unclaimed.oldest, pending.oldest)), 0)::float8 AS lag
       FROM unclaimed, pending, pending_rows`,
  );
  return { rows: Number(r.rows), ms: Number(r.ms), lagSeconds: Math.max(0, Number(r.lag)) };
}
