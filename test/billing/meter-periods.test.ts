/**
 * Usage that reaches the reporter late or with odd timestamps still lands on an invoice: a closed
 * billing period's usage goes to the open one, nothing is stamped ahead of Stripe's clock, and
 * reconcile compares reports by the window they were sent with. The reporter, catalog and accounts
 * are the real classes, on a real Postgres and the fake Stripe (whose clock the tests move).
 */
import { randomBytes } from 'node:crypto';
import pino from 'pino';
import type { Client } from 'pg';
import type { DataSource } from 'typeorm';
import type { FakeStripe } from '../../src/modules/billing/fake-stripe';
import { MeterReporter } from '../../src/modules/billing/meter-reporter';
import { PriceBook, type Query } from '../../src/modules/billing/price-book';
import { reconcile } from '../../src/modules/billing/reconcile';
import { StripeAccounts, StripeCatalog } from '../../src/modules/billing/stripe-setup';
import { periodOf } from '../../src/modules/billing/spend';
import { ownerClient } from '../support/db';
import { startFake } from '../billing/support';

const DAY = 86_400_000;
let offsetMs = 0; // the fake Stripe's clock is Date.now() + offsetMs
let fake: FakeStripe;
let owner: Client;
let query: Query;
let db: DataSource;
let catalog: StripeCatalog;
let accounts: StripeAccounts;
const log = pino({ level: 'silent' });

beforeAll(async () => {
  fake = await startFake({ clock: () => Date.now() + offsetMs });
  owner = await ownerClient();
  query = async (sql, params) => (await owner.query(sql, params as unknown[])).rows;
  // TypeORM's DataSource.query answers UPDATE/DELETE with [rows, count], everything else with rows.
  db = { query: async (sql: string, params?: unknown[]) => {
    const r = await owner.query(sql, params);
    return r.command === 'UPDATE' || r.command === 'DELETE' ? [r.rows, r.rowCount] : r.rows;
  } } as unknown as DataSource;
  const stripe = fake.client();
  catalog = new StripeCatalog(stripe, query, new PriceBook(query), log);
  await catalog.sync();
  accounts = new StripeAccounts(stripe, catalog, (_id, fn) => fn(query));
});
afterAll(async () => {
  await owner.end();
  await fake.close();
});
beforeEach(async () => {
  // Each test sees only its own reports.
  await owner.query(`UPDATE meter_reports SET status = 'SENT' WHERE status = 'PENDING'`);
  fake.clearFaults();
  offsetMs = 0;
});

const newReporter = () => new MeterReporter({ db, stripe: fake.client(), catalog, accounts, log },
  { windowSeconds: 60, timeoutMs: 2000, baseBackoffMs: 50, maxBackoffMs: 200, eventsPerSecond: 200 });

/** A tenant whose Stripe customer and subscription were created `subscribedAgoMs` ago (the fake's clock set back then). */
async function tenant(subscribedAgoMs = 0, subscribe = true): Promise<{ id: string; customer: string | null; anchor: Date | null }> {
  const slug = `audit-${randomBytes(5).toString('hex')}`;
  const { rows: [t] } = await owner.query(
    `INSERT INTO tenants (name, slug, webhook_secret, created_at) VALUES ($1, $1, 'x', now() - make_interval(secs => $2::float8 / 1000)) RETURNING id`,
    [slug, subscribedAgoMs + 60_000]);
  if (subscribe) {
    offsetMs = -subscribedAgoMs;
    try {
      await accounts.ensure(t.id);
    } finally {
      offsetMs = 0;
    }
  }
  const { rows: [a] } = await owner.query('SELECT stripe_customer_id, stripe_billing_anchor FROM tenants WHERE id = $1', [t.id]);
  return { id: t.id, customer: a.stripe_customer_id, anchor: a.stripe_billing_anchor };
}

/** One billable ledger row (a CPU prediction) that ended at `endedAt`. */
async function usage(tenantId: string, endedAt: Date, ms: number): Promise<void> {
  const { rows: [job] } = await owner.query(
    `INSERT INTO jobs (tenant_id, kind, service, status, hardware, devices, attempt, node_id, started_at)
     VALUES ($1, 'PREDICTION', 'system.echo', 'SUCCEEDED', 'CPU', 1, 1, 'audit-node', $2) RETURNING id`,
    [tenantId, new Date(endedAt.getTime() - ms)]);
  await owner.query(
    `INSERT INTO usage_ledger (tenant_id, job_id, attempt, job_kind, service, hardware, devices, node_id, started_at, ended_at, billable_ms, billable)
     VALUES ($1, $2, 1, 'PREDICTION', 'system.echo', 'CPU', 1, 'audit-node', $3, $4, $5, true)`,
    [tenantId, job.id, new Date(endedAt.getTime() - ms), endedAt, ms]);
}

async function drain(r: MeterReporter, passes = 3): Promise<void> {
  for (let i = 0; i < passes; i++) {
    await r.pass();
    await new Promise((res) => setTimeout(res, 250));
  }
}

/** The current billing period of the tenant's subscription, as the fake Stripe (and Stripe) computes it. */
function currentPeriod(customer: string): { start: number; end: number } {
  const sub = [...fake.state.subscriptions.values()].find((s) => s.customer === customer)!;
  const item = sub.items.data[0] as unknown as { current_period_start: number; current_period_end: number };
  // Reading it through the API refreshes the periods; the item carries them.
  return { start: item.current_period_start, end: item.current_period_end };
}

describe('meter reports and billing periods', () => {
  it('usage older than 35 days goes into the open billing period, not into one already invoiced', async () => {
    // Subscribed 45 days ago: periods [-45 d, ~-14 d) (closed and invoiced long ago) and [~-14 d, ~+17 d) (open).
    const t = await tenant(45 * DAY);
    // A row that ended 40 days ago reaches the ledger only now (control plane down, replayed completion, ...).
    await usage(t.id, new Date(Date.now() - 40 * DAY), 123_456);
    await fake.client().subscriptions.list({ customer: t.customer! }); // refreshes the item periods
    const open = currentPeriod(t.customer!);
    // Stripe invoiced the closed period at its end (what `finalizeInvoice` models): nothing was there yet.
    const closedInvoice = fake.finalizeInvoice(t.customer!);
    expect(closedInvoice.period_end).toBeLessThanOrEqual(open.start);

    await drain(newReporter());

    const events = fake.state.meterEvents.filter((e) => e.customerId === t.customer);
    expect(events).toHaveLength(1); // Stripe accepted it...
    // Not inside the period invoiced two weeks ago (no invoice would ever carry it): in the open one.
    expect({ timestamp: events[0].timestamp, inOpenPeriod: events[0].timestamp >= open.start })
      .toEqual({ timestamp: events[0].timestamp, inOpenPeriod: true });
  });

  it('usage reported after its period closed (reporter or Stripe down over the period end) goes into the open period', async () => {
    // Subscribed ~32 days ago: the first period ended about a day ago and was invoiced (grace period: 1 h).
    const t = await tenant(32 * DAY);
    await fake.client().subscriptions.list({ customer: t.customer! });
    const open = currentPeriod(t.customer!);
    fake.finalizeInvoice(t.customer!);
    // Usage that ended 10 minutes before the period end, still unreported a day later.
    await usage(t.id, new Date(open.start * 1000 - 10 * 60_000), 600_000);

    await drain(newReporter());

    const events = fake.state.meterEvents.filter((e) => e.customerId === t.customer);
    expect(events).toHaveLength(1);
    // Its own period's invoice is final: the 10 device-minutes are billed in the open period.
    expect(fake.meterTotal('nimbus_prediction_cpu_ms', t.customer!, new Date(open.start * 1000))).toBe(600_000);
  });

  it('a ledger row ahead of the clock (node clock skew over 5 min) is sent stamped now, not refused for as long as the skew', async () => {
    const t = await tenant(60_000);
    // A node whose clock runs 1 h fast reports the end of a job that really ended just now.
    await usage(t.id, new Date(Date.now() + 3600_000), 42_000);

    await drain(newReporter());

    const { rows } = await owner.query(
      `SELECT r.status, r.last_error FROM meter_reports r WHERE r.tenant_id = $1`, [t.id]);
    expect(rows).toHaveLength(1);
    // Not refused ("no more than 5 minutes in the future") every minute for as long as the skew.
    expect(rows[0]).toEqual({ status: 'SENT', last_error: null });
    expect(fake.meterTotal('nimbus_prediction_cpu_ms', t.customer!)).toBe(42_000);
  });

  it('reconcile agrees with Stripe for usage reported long after it ended (a tenant subscribed late)', async () => {
    // A tenant from before billing existed (or whose sign-up found Stripe down for long): its usage ended 100 days ago.
    const t = await tenant(0, false);
    await usage(t.id, new Date(Date.now() - 100 * DAY), 77_000);
    const r = newReporter();
    await drain(r); // creates the customer + subscription (ensureAccounts), then claims and sends at the anchor (now)
    const { rows: [{ status }] } = await owner.query(`SELECT status FROM meter_reports WHERE tenant_id = $1`, [t.id]);
    expect(status).toBe('SENT');
    const { rows: [{ stripe_customer_id: customer }] } = await owner.query('SELECT stripe_customer_id FROM tenants WHERE id = $1', [t.id]);
    expect(fake.meterTotal('nimbus_prediction_cpu_ms', customer)).toBe(77_000);

    const period = periodOf(new Date());
    const rows = await reconcile({ query, stripe: fake.client(), catalog, start: period.start, end: period.end });
    const mine = rows.filter((x) => x.tenantId === t.id);
    // Stripe and the ledger agree (every billable row is reported, with its meter event in this month).
    expect(mine.map((x) => ({ meter: x.meter, stripe: x.stripeMs, ledger: x.ledgerMs })))
      .toEqual([{ meter: 'nimbus_prediction_cpu_ms', stripe: 77_000n, ledger: 77_000n }]);
  });

  it('tenants whose Stripe account keeps failing do not hide newer tenants from the account retry', async () => {
    // 100 older tenants without a subscription whose customer creation keeps failing, then a newer one.
    const { rows: old } = await owner.query(
      `INSERT INTO tenants (name, slug, webhook_secret, created_at)
       SELECT 'stuck-' || g || '-' || $1, 'stuck-' || g || '-' || $1, 'x', now() - interval '1 day' + g * interval '1 second'
         FROM generate_series(1, 100) g RETURNING id`, [randomBytes(4).toString('hex')]);
    const fresh = await tenant(0, false);
    const stuck = new Set(old.map((r: { id: string }) => r.id));
    const ensured: string[] = [];
    const flakyAccounts = {
      ensure: async (id: string) => {
        if (stuck.has(id)) throw new Error('Stripe refuses this customer');
        ensured.push(id);
        return { customerId: 'cus_x', subscriptionId: 'sub_x' };
      },
    } as unknown as StripeAccounts;
    const r = new MeterReporter({ db, stripe: fake.client(), catalog, accounts: flakyAccounts, log },
      { windowSeconds: 60, timeoutMs: 2000, baseBackoffMs: 50, maxBackoffMs: 200, eventsPerSecond: 200 });
    try {
      for (let i = 0; i < 3 && !ensured.includes(fresh.id); i++) await (r as unknown as { ensureAccounts(): Promise<void> }).ensureAccounts();
      expect(ensured).toContain(fresh.id);
    } finally {
      await owner.query('DELETE FROM tenants WHERE id = ANY($1::uuid[])', [[...stuck]]);
    }
  });
});
