import Stripe from 'stripe';
import type { Logger } from 'pino';
import type { DataSource } from 'typeorm';
import type { BillingMetrics } from './billing.metrics';
import { meterKey } from './price-book';
import type { StripeAccounts, StripeCatalog } from './stripe-setup';
import { isDuplicateIdentifier } from './stripe-gateway';

const FLUSH_EVERY = 500;
const FLUSH_INTERVAL_MS = 1000;

export interface ReporterOptions {
  /** Pause between passes when there is nothing to do. */
  intervalMs: number;
  /** Ledger rows claimed per transaction. */
  claimBatch: number;
  /** Width of a meter-event window; windows are aligned on the tenant's billing anchor. */
  windowSeconds: number;
  /** Meter events per second at most (token bucket). */
  eventsPerSecond: number;
  /** Requests in flight at most; the token bucket is what limits the rate. */
  concurrency: number;
  /** Per-request timeout. */
  timeoutMs: number;
  /** How long reports picked for sending are reserved to this reporter (computed when absent). */
  leaseMs?: number;
  baseBackoffMs: number;
  maxBackoffMs: number;
}

export const DEFAULT_REPORTER_OPTIONS: ReporterOptions = {
  intervalMs: 2000, claimBatch: 5000, windowSeconds: 60, eventsPerSecond: 100, concurrency: 0,
  timeoutMs: 10_000, baseBackoffMs: 500, maxBackoffMs: 60_000,
};

export interface ReporterDeps {
  /** Owner connection: the reporter works across tenants. */
  db: DataSource;
  stripe: Stripe;
  catalog: StripeCatalog;
  accounts: StripeAccounts;
  log: Logger;
  /** Runs after every pass (spend-limit checks live in the same loop). */
  afterPass?: () => Promise<void>;
  metrics?: BillingMetrics;
}

interface DueReport {
  id: string;
  job_kind: string;
  hardware: string;
  value: string;
  ts: string;
  stripe_customer_id: string;
}

export interface ReporterStats {
  claimedRows: number;
  reports: number;
  sent: number;
  duplicates: number;
  rateLimited: number;
  failed: number;
}

/**
 * Turns billable ledger rows into Stripe meter events, exactly once (transactional outbox):
 *
 * 1. claim: in one statement, lock unclaimed billable rows (`FOR UPDATE SKIP LOCKED`), group them per
 *    tenant × meter × window, insert one PENDING `meter_reports` row per group (value = Σ billable_ms)
 *    and point the rows at it (`usage_ledger.report_id`).
 * 2. send: pick due PENDING reports (leased for a while, so two reporters do not race), send each as a
 *    v1 meter event whose `identifier` is the report id and `timestamp` its window start; mark it SENT
 *    and its rows `reported_at` only once Stripe has accepted it. A reused identifier (400
 *    `resource_already_exists`) means Stripe already has it: delivered.
 *
 * A crash anywhere leaves PENDING reports that are sent again with the same identifier, so Stripe
 * counts each once. 429s pause every sender for Retry-After (with jitter); 5xx, timeouts and dropped
 * connections back off exponentially with jitter per report; a token bucket keeps to the configured rate.
 */
export class MeterReporter {
  readonly opts: ReporterOptions;
  readonly stats: ReporterStats = { claimedRows: 0, reports: 0, sent: 0, duplicates: 0, rateLimited: 0, failed: 0 };
  private running = false;
  private killed = false;
  private loop: Promise<void> | null = null;
  private wake: (() => void) | null = null;
  private pausedUntil = 0;
  private readonly bucket: TokenBucket;
  private readonly accountRetryAt = new Map<string, number>();

  constructor(private readonly deps: ReporterDeps, opts: Partial<ReporterOptions> = {}) {
    const o = { ...DEFAULT_REPORTER_OPTIONS, ...opts };
    if (!o.concurrency) o.concurrency = Math.min(128, Math.max(4, Math.ceil(o.eventsPerSecond / 3)));
    this.opts = o;
    this.bucket = new TokenBucket(o.eventsPerSecond, Math.max(1, Math.ceil(o.eventsPerSecond / 10)));
  }

  private get sendBatch(): number {
    return Math.min(1000, Math.max(10, this.opts.eventsPerSecond * 5));
  }

  private get leaseMs(): number {
    return this.opts.leaseMs ?? Math.ceil((2 * this.sendBatch * 1000) / this.opts.eventsPerSecond) + this.opts.timeoutMs + 5000;
  }

  start(): void {
    if (this.running) return;
    this.running = true;
    this.loop = this.run();
  }

  /** Finishes the pass in progress (recording what Stripe accepted), then stops. */
  async stop(): Promise<void> {
    this.running = false;
    this.wake?.();
    await this.loop;
  }

  /** Tests: dies like a crashed process would, without recording anything more (in-flight requests are abandoned). */
  kill(): void {
    this.killed = true;
    this.running = false;
    this.wake?.();
  }

  /** One pass: make sure every tenant has its Stripe customer, claim new ledger rows, send what is due. */
  async pass(): Promise<{ claimed: number; sent: number }> {
    await this.ensureAccounts();
    const claimed = await this.claim();
    const sent = await this.sendDue();
    return { claimed, sent };
  }

  private async run(): Promise<void> {
    while (this.running) {
      let busy = false;
      try {
        const r = await this.pass();
        busy = r.claimed > 0 || r.sent > 0;
      } catch (err) {
        if (this.killed) return;
        this.deps.log.warn({ err: (err as Error).message }, 'meter reporting pass failed; retrying');
      }
      if (this.killed) return;
      await this.deps.afterPass?.().catch((err: Error) => this.deps.log.warn({ err: err.message }, 'spend checks failed'));
      if (!busy && this.running) {
        await new Promise<void>((resolve) => {
          const t = setTimeout(resolve, this.opts.intervalMs);
          this.wake = () => {
            clearTimeout(t);
            resolve();
          };
        });
        this.wake = null;
      }
    }
  }

  /** Tenants created while Stripe was unreachable (or before billing existed) get their customer and subscription now. */
  private async ensureAccounts(): Promise<void> {
    // Tenants waiting out a retry are left out of the query, not skipped after it: 100 that keep
    // failing would otherwise hide every newer tenant from it.
    const waiting = [...this.accountRetryAt].filter(([, at]) => at > Date.now()).map(([id]) => id);
    const rows: Array<{ id: string }> = await this.deps.db.query(
      'SELECT id FROM tenants WHERE stripe_subscription_id IS NULL AND NOT (id = ANY($1::uuid[])) ORDER BY created_at LIMIT 100',
      [waiting],
    );
    for (const { id } of rows) {
      if (this.killed) continue;
      try {
        await this.deps.accounts.ensure(id);
        this.accountRetryAt.delete(id);
      } catch (err) {
        this.accountRetryAt.set(id, Date.now() + this.backoff(3));
        this.deps.log.warn({ tenant: id, err: (err as Error).message }, 'could not create the Stripe customer/subscription; will retry');
      }
    }
  }

  /** Step 1 (outbox): claims up to `claimBatch` rows into PENDING reports in one statement; returns the rows claimed. */
  async claim(): Promise<number> {
    const [r]: Array<{ rows: string; reports: string }> = await this.deps.db.query(
      `WITH picked AS (
         SELECT l.id, l.tenant_id, CASE WHEN l.job_kind = 'PREDICTION' THEN 'PREDICTION' ELSE 'TRAINING' END AS kind, l.hardware,
                l.billable_ms, billing_window(l.ended_at, t.stripe_billing_anchor, $2) AS window_start
           FROM usage_ledger l JOIN tenants t ON t.id = l.tenant_id
          WHERE l.billable AND l.report_id IS NULL AND t.stripe_subscription_id IS NOT NULL
          ORDER BY l.created_at
          LIMIT $1
          FOR UPDATE OF l SKIP LOCKED
       ), groups AS (
         SELECT gen_random_uuid() AS id, tenant_id, kind, hardware, window_start, sum(billable_ms)::bigint AS value, array_agg(id) AS ids
           FROM picked GROUP BY tenant_id, kind, hardware, window_start
       ), reports AS (
         -- Nothing to bill (zero-length attempts) needs no meter event.
         INSERT INTO meter_reports (id, tenant_id, job_kind, hardware, value, window_start, status, sent_at)
         SELECT id, tenant_id, kind, hardware, value, window_start,
                CASE WHEN value = 0 THEN 'SENT' ELSE 'PENDING' END, CASE WHEN value = 0 THEN now() END
           FROM groups
         RETURNING id
       ), claimed AS (
         UPDATE usage_ledger l SET report_id = x.report_id, reported_at = CASE WHEN x.value = 0 THEN now() END
           FROM (SELECT g.id AS report_id, g.value, unnest(g.ids) AS ledger_id FROM groups g) x
          WHERE l.id = x.ledger_id
         RETURNING 1
       )
       SELECT (SELECT count(*) FROM claimed) AS rows, (SELECT count(*) FROM reports) AS reports`,
      [this.opts.claimBatch, this.opts.windowSeconds],
    );
    const rows = Number(r.rows);
    this.stats.claimedRows += rows;
    this.deps.metrics?.ledgerRowsClaimed.inc(rows);
    this.stats.reports += Number(r.reports);
    return rows;
  }

  /**
   * Step 2: sends the PENDING reports that are due, oldest window first, leasing the next batch while
   * the current one is sent; at most `max` per call (so a pass also claims and checks spend). Returns
   * how many Stripe accepted.
   */
  async sendDue(max = this.opts.eventsPerSecond * 10): Promise<number> {
    if (this.killed) return 0;
    const meters = await this.deps.catalog.meters();
    const queue: DueReport[] = [];
    let leased = 0;
    let exhausted = false;
    let leasing: Promise<void> | null = null;
    const lease = async () => {
      try {
        const want = Math.min(this.sendBatch, max - leased);
        const got = want > 0 && !this.killed ? await this.lease(want) : [];
        leased += got.length;
        if (got.length < want || want === 0) exhausted = true;
        queue.push(...got);
      } catch (err) {
        exhausted = true;
        this.deps.log.warn({ err: (err as Error).message }, 'leasing meter reports failed');
      }
    };
    // `finally` runs a tick later, so `leasing` is cleared only after it was set, even when nothing is awaited.
    const refill = (): Promise<void> => (leasing ??= lease().finally(() => {
      leasing = null;
    }));
    await refill();
    if (queue.length === 0) return 0;

    const accepted: string[] = [];
    let total = 0;
    let flushedAt = Date.now();
    const flush = async () => {
      flushedAt = Date.now();
      const ids = accepted.splice(0);
      total += ids.length;
      await this.markSent(ids);
    };
    const worker = async () => {
      while (!this.killed) {
        if (!exhausted && queue.length < this.sendBatch / 2) void refill();
        const report = queue.shift();
        if (!report) {
          if (leasing) {
            await leasing;
            continue;
          }
          return;
        }
        await this.waitIfPaused();
        await this.bucket.take();
        if (this.killed) return;
        const outcome = await this.send(report, meters.get(meterKey(report.job_kind, report.hardware))!.eventName);
        if (this.killed) return;
        if (outcome === 'retry') queue.unshift(report);
        else if (outcome === 'accepted') {
          accepted.push(report.id);
          // Record progress about once a second: a crash resends at most that much (deduplicated by Stripe).
          if (accepted.length >= FLUSH_EVERY || Date.now() - flushedAt >= FLUSH_INTERVAL_MS) await flush();
        }
      }
    };
    await Promise.all(Array.from({ length: this.opts.concurrency }, worker));
    if (this.killed) return 0;
    await leasing;
    await flush();
    return total;
  }

  /** Reserves up to `n` due reports to this reporter for the lease time (others skip them meanwhile). */
  private async lease(n: number): Promise<DueReport[]> {
    const due: DueReport[] = (await this.deps.db.query(
      `UPDATE meter_reports r
          SET next_attempt_at = now() + make_interval(secs => $2::float8 / 1000),
              -- Usage whose billing period has closed (Stripe finalizes an invoice an hour after its period
              -- ends; 50 minutes leaves room for the send) would be accepted and never invoiced: it goes
              -- into the open period. That also keeps within the 35 days back Stripe accepts. Nothing is
              -- timestamped ahead of now (a node clock running fast): Stripe refuses more than 5 minutes.
              window_start = least(date_trunc('second', now()),
                CASE WHEN r.window_start < billing_period_start(t.stripe_billing_anchor, now() - interval '50 minutes')
                     THEN billing_period_start(t.stripe_billing_anchor, now()) ELSE r.window_start END)
         FROM tenants t
        WHERE r.id IN (SELECT id FROM meter_reports WHERE status = 'PENDING' AND next_attempt_at <= now()
                        ORDER BY window_start LIMIT $1 FOR UPDATE SKIP LOCKED)
          AND t.id = r.tenant_id
       RETURNING r.id, r.job_kind, r.hardware, r.value::text AS value, extract(epoch FROM r.window_start)::bigint::text AS ts, t.stripe_customer_id`,
      [n, this.leaseMs],
    ))[0];
    return due.sort((x, y) => Number(x.ts) - Number(y.ts));
  }

  private async send(report: DueReport, eventName: string): Promise<'accepted' | 'retry' | 'failed'> {
    try {
      await this.deps.stripe.billing.meterEvents.create({
        event_name: eventName, identifier: report.id, timestamp: Number(report.ts),
        payload: { stripe_customer_id: report.stripe_customer_id, value: report.value },
      }, { timeout: this.opts.timeoutMs, maxNetworkRetries: 0 });
      this.stats.sent++;
      this.deps.metrics?.meterEvents.inc({ outcome: 'accepted' });
      return 'accepted';
    } catch (err) {
      if (isDuplicateIdentifier(err)) {
        this.stats.duplicates++;
        this.stats.sent++;
        this.deps.metrics?.meterEvents.inc({ outcome: 'duplicate' });
        return 'accepted';
      }
      if (err instanceof Stripe.errors.StripeError && err.statusCode === 429) {
        this.stats.rateLimited++;
        this.deps.metrics?.meterEvents.inc({ outcome: 'rate_limited' });
        const retryAfter = Number(err.headers?.['retry-after']);
        const waitMs = (Number.isFinite(retryAfter) && retryAfter > 0 ? retryAfter * 1000 : this.opts.baseBackoffMs) * (1 + Math.random() * 0.2);
        this.pausedUntil = Math.max(this.pausedUntil, Date.now() + waitMs);
        return 'retry';
      }
      this.stats.failed++;
      this.deps.metrics?.meterEvents.inc({ outcome: 'failed' });
      const transient = !(err instanceof Stripe.errors.StripeError) || err.statusCode === undefined || err.statusCode >= 500 ||
        err.statusCode === 409 || err instanceof Stripe.errors.StripeConnectionError;
      const message = (err as Error).message.slice(0, 500);
      if (!transient) this.deps.log.error({ report: report.id, err: message }, 'Stripe refused a meter event; it stays PENDING and is retried slowly');
      if (this.killed) return 'failed';
      await this.deps.db.query(
        `UPDATE meter_reports SET attempts = attempts + 1, last_error = $2,
                next_attempt_at = now() + make_interval(secs => CASE WHEN $3
                  THEN least($5::float8, $4::float8 * 2 ^ least(attempts, 16)) * (0.5 + random() * 0.5)
                  ELSE $5::float8 END / 1000)
          WHERE id = $1 AND status = 'PENDING'`,
        [report.id, message, transient, this.opts.baseBackoffMs, this.opts.maxBackoffMs],
      );
      return 'failed';
    }
  }

  /** Exponential backoff with jitter (half to full of the exponential step). */
  private backoff(attempt: number): number {
    const step = Math.min(this.opts.maxBackoffMs, this.opts.baseBackoffMs * 2 ** attempt);
    return Math.round(step * (0.5 + Math.random() * 0.5));
  }

  private async waitIfPaused(): Promise<void> {
    for (let wait = this.pausedUntil - Date.now(); wait > 0 && !this.killed; wait = this.pausedUntil - Date.now()) {
      await new Promise((r) => setTimeout(r, wait));
    }
  }

  /** Stripe has these: the reports are SENT and their ledger rows reported, in one statement. */
  private async markSent(ids: string[]): Promise<void> {
    if (ids.length === 0) return;
    await this.deps.db.query(
      `WITH s AS (
         UPDATE meter_reports SET status = 'SENT', sent_at = now(), attempts = attempts + 1, last_error = NULL
          WHERE id = ANY($1::uuid[]) AND status = 'PENDING' RETURNING id
       )
       UPDATE usage_ledger SET reported_at = now() WHERE report_id IN (SELECT id FROM s) AND reported_at IS NULL`,
      [ids],
    );
  }
}

/** Hands out `rate` tokens a second with bursts of at most `burst`. */
export class TokenBucket {
  private tokens: number;
  private last = Date.now();

  constructor(private readonly rate: number, private readonly burst: number) {
    this.tokens = burst;
  }

  async take(): Promise<void> {
    for (;;) {
      const now = Date.now();
      this.tokens = Math.min(this.burst, this.tokens + ((now - this.last) / 1000) * this.rate);
      this.last = now;
      if (this.tokens >= 1) {
        this.tokens -= 1;
        return;
      }
      await new Promise((r) => setTimeout(r, Math.max(1, ((1 - this.tokens) / this.rate) * 1000)));
    }
  }
}
