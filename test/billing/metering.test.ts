import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { Client } from 'pg';
import type { FakeStripe } from '../../src/modules/billing/fake-stripe';
import type { MeterReporter } from '../../src/modules/billing/meter-reporter';
import { reconcile } from '../../src/modules/billing/reconcile';
import { periodOf } from '../../src/modules/billing/spend';
import type { NodeEvent } from '../../src/platform/queue/messages';
import { signUpTenant, type TestTenant } from '../support/api';
import { startCluster, waitFor, type TestCluster } from '../support/cluster';
import { ownerClient } from '../support/db';
import { PREDICT } from '../support/gql';
import { EVENT_NAMES, startFake, stripeEnv } from './support';
import { seededRandom } from '../../src/platform/random';

let fake: FakeStripe;
let cluster: TestCluster;
let owner: Client;

beforeAll(async () => {
  // Stripe's meter-event limiter, below what two reporters together try to send: real 429s with Retry-After.
  fake = await startFake({ meterEventRateLimitPerSecond: 150 });
  cluster = await startCluster({ agents: [{ name: 'cpu-1', devices: 2 }], apiOverrides: stripeEnv(fake) });
  // This file drives its own reporters (started, killed, restarted); the control plane's own one is stopped.
  await cluster.cp.billing.reporter!.stop();
  owner = await ownerClient();
});
afterAll(async () => {
  await owner.end();
  await cluster.close();
  await fake.close();
});

const random = seededRandom(20261125); // the same mix every run
const pick = <T>(xs: readonly T[]): T => xs[Math.floor(random() * xs.length)];
const shuffle = <T>(xs: T[]): T[] => xs.map((x) => [random(), x] as const).sort((p, q) => p[0] - q[0]).map(([, x]) => x);

/** A wave of jobs ended just now as nodes report them, through the recorder; returns the events (to replay later). */
async function wave(tenants: TestTenant[], n: number): Promise<NodeEvent[]> {
  const events: NodeEvent[] = [];
  for (let i = 0; i < n; i++) {
    const t = pick(tenants);
    const kind = pick(['PREDICTION', 'PREDICTION', 'TRAINING', 'TRIAL'] as const);
    const hardware = pick(['CPU', 'CPU', 'GPU'] as const);
    const devices = 1 + Math.floor(random() * 4);
    const stale = random() < 0.08; // a superseded attempt (node lost, job moved on): recorded, not billable
    const { rows: [job] } = await owner.query(
      `INSERT INTO jobs (tenant_id, kind, service, status, hardware, devices, attempt, node_id, started_at)
       VALUES ($1, $2, $3, $7, $4, $5, $6, 'gen-node', now()) RETURNING id`,
      [t.tenantId, kind, kind === 'PREDICTION' ? pick(['vision.faces', 'language.sentiment', 'system.echo']) : 'training:gen', hardware, devices, stale ? 2 : 1, stale ? 'SUCCEEDED' : 'RUNNING'],
    );
    const endedAt = Date.now() - Math.floor(random() * 3000);
    const duration = Math.floor(random() * 120_000);
    events.push({
      type: 'ended', jobId: job.id, attempt: 1, node: 'gen-node', status: pick(['SUCCEEDED', 'SUCCEEDED', 'FAILED', 'CANCELED'] as const),
      startedAt: endedAt - duration, endedAt, devices, hardware,
    });
  }
  // Every completion arrives twice, out of order, in batches like the stream's.
  const all = shuffle([...events, ...events]);
  for (let i = 0; i < all.length; i += 50) await cluster.cp.recorder.handleBatch(all.slice(i, i + 50));
  return events;
}

const reporterOptions = { windowSeconds: 1, timeoutMs: 500, leaseMs: 1500, baseBackoffMs: 100, maxBackoffMs: 2000, eventsPerSecond: 200, intervalMs: 200 };
const accepted = () => fake.state.meterEvents.length;
/** A sample's value from the control plane's registry (the one /metrics serves), 0 when absent. */
async function metric(name: string, labels: Record<string, string> = {}): Promise<number> {
  const m = cluster.api.app.metrics.registry.getSingleMetric(name);
  if (!m) throw new Error(`no metric ${name}`);
  const { values } = await m.get();
  const v = values.find((x) => Object.entries(labels).every(([k, want]) => x.labels[k] === want));
  return v?.value ?? 0;
}

describe('meter reporting', () => {
  it('reports exactly the ledger\'s billable device-ms to Stripe through 429s, 500s, timeouts, lost answers, duplicate completions and killed reporters', async () => {
    const tenants = [await signUpTenant(cluster.api, 'Meter A'), await signUpTenant(cluster.api, 'Meter B')];
    // Stripe is down when the third tenant signs up: sign-up still works, the reporter creates the customer later.
    fake.injectFaults({ path: '/v1/customers', method: 'POST', status: 500, count: 50 });
    tenants.push(await signUpTenant(cluster.api, 'Meter C'));
    fake.clearFaults();
    const { rows: accounts } = await owner.query('SELECT id, stripe_customer_id, stripe_billing_anchor FROM tenants WHERE id = ANY($1) ORDER BY name', [tenants.map((t) => t.tenantId)]);
    expect(accounts.map((a) => a.stripe_customer_id === null)).toEqual([false, false, true]);
    // Usage ends after the subscriptions began (windows are aligned on them).
    const anchor = Math.max(...accounts.filter((a) => a.stripe_billing_anchor).map((a) => +a.stripe_billing_anchor));
    await new Promise((r) => setTimeout(r, Math.max(0, anchor + 3100 - Date.now())));

    // Real jobs through the queue and a node, too.
    for (let i = 0; i < 12; i++) {
      const res = await cluster.api.gql(PREDICT, { input: { service: 'system.echo', input: { sleepMs: Math.floor(random() * 200) }, wait: 10 } }, tenants[i % 3].token);
      expect(res.data.predict.status).toBe('SUCCEEDED');
    }
    const first = await wave(tenants, 150);
    // The backlog shows in the metrics before anything is reported.
    expect(await metric('nimbus_billing_unreported_rows')).toBeGreaterThan(100);
    expect(await metric('nimbus_billing_unreported_usage_seconds')).toBeGreaterThan(0);
    expect(await metric('nimbus_billing_lag_seconds')).toBeGreaterThan(0);

    fake.injectFaults({ path: /meter_events/, status: 500, probability: 0.08, seed: 3 });
    fake.injectFaults({ path: /meter_events/, mode: 'lost_response', probability: 0.05, seed: 4 });
    fake.injectFaults({ path: /meter_events/, status: 429, count: 3, retryAfterSeconds: 1 });
    fake.injectFaults({ path: /meter_events/, mode: 'timeout', count: 3 });
    fake.injectFaults({ path: /meter_events/, mode: 'reset', count: 3 });

    // Reporter 1 claims, starts sending and is killed mid-batch (what Stripe accepted last is never recorded).
    const billing = cluster.cp.billing;
    const r1 = billing.newReporter(reporterOptions);
    expect(await r1.claim()).toBeGreaterThan(0);
    const before = accepted();
    r1.start();
    await waitFor(() => accepted() - before >= 20, 15_000, 'reporter 1 to send some events');
    r1.kill();
    // Stripe accepted some of its events whose reports it never marked SENT: they will be sent again.
    await new Promise((r) => setTimeout(r, 700));
    const identifiers = new Set(fake.state.meterEvents.map((e) => e.identifier));
    const { rows: pending } = await owner.query(`SELECT id FROM meter_reports WHERE status = 'PENDING'`);
    expect(pending.filter((p) => identifiers.has(p.id)).length).toBeGreaterThan(0);

    // Reporter 2 claims the next wave and dies before sending anything.
    await wave(tenants, 150);
    const r2 = billing.newReporter(reporterOptions);
    expect(await r2.claim()).toBeGreaterThan(0);
    r2.kill();

    // Two reporters run side by side while more usage (and replays of old completions) arrives.
    const survivors: MeterReporter[] = [billing.newReporter(reporterOptions), billing.newReporter(reporterOptions)];
    for (const r of survivors) r.start();
    await wave(tenants, 100);
    for (let i = 0; i < first.length; i += 50) await cluster.cp.recorder.handleBatch(first.slice(i, i + 50));

    const unreported = async () => Number((await owner.query(
      `SELECT (SELECT count(*) FROM usage_ledger WHERE billable AND reported_at IS NULL) + (SELECT count(*) FROM meter_reports WHERE status = 'PENDING') AS n`)).rows[0].n);
    await waitFor(async () => (await unreported()) === 0, 60_000, 'every billable row to be reported');
    await Promise.all(survivors.map((r) => r.stop()));

    // Stripe holds, for every tenant and meter, exactly the ledger's billable device-ms.
    const { rows: ledger } = await owner.query(
      `SELECT t.stripe_customer_id AS customer, CASE WHEN l.job_kind = 'PREDICTION' THEN 'prediction' ELSE 'training' END AS kind, lower(l.hardware) AS hw,
              sum(l.billable_ms)::bigint::text AS ms, count(*)::int AS n
         FROM usage_ledger l JOIN tenants t ON t.id = l.tenant_id WHERE l.billable GROUP BY 1, 2, 3`,
    );
    expect(ledger.reduce((n, r) => n + r.n, 0)).toBeGreaterThan(300);
    const customers = (await owner.query('SELECT stripe_customer_id FROM tenants WHERE id = ANY($1)', [tenants.map((t) => t.tenantId)])).rows.map((r) => r.stripe_customer_id);
    expect(customers.every((c) => typeof c === 'string')).toBe(true);
    for (const customer of customers) {
      for (const eventName of EVENT_NAMES) {
        const [, kind, hw] = /^nimbus_(\w+)_(cpu|gpu)_ms$/.exec(eventName)!;
        const expected = Number(ledger.find((r) => r.customer === customer && r.kind === kind && r.hw === hw)?.ms ?? 0);
        expect({ customer, eventName, total: fake.meterTotal(eventName, customer) }).toEqual({ customer, eventName, total: expected });
      }
    }
    const { rows: [check] } = await owner.query(
      `SELECT count(*) FILTER (WHERE billable AND (reported_at IS NULL OR report_id IS NULL))::int AS unreported,
              count(*) FILTER (WHERE NOT billable AND report_id IS NOT NULL)::int AS wrongly_reported,
              count(*) FILTER (WHERE NOT billable)::int AS non_billable
         FROM usage_ledger`,
    );
    expect(check).toMatchObject({ unreported: 0, wrongly_reported: 0 });
    expect(check.non_billable).toBeGreaterThan(0);

    // The faults really happened, and resends were deduplicated by identifier.
    const meterRequests = fake.requests.filter((r) => r.path === '/v1/billing/meter_events');
    expect(meterRequests.filter((r) => r.status === 429).length).toBeGreaterThanOrEqual(3);
    expect(meterRequests.filter((r) => r.status === 500).length).toBeGreaterThan(0);
    expect(meterRequests.filter((r) => r.fault === 'timeout' || r.fault === 'reset' || r.fault === 'lost_response').length).toBeGreaterThan(0);
    expect(fake.state.meterEventErrors.filter((e) => e.code === 'duplicate_identifier').length).toBeGreaterThan(0);
    expect(fake.state.meterEventErrors.filter((e) => e.code !== 'duplicate_identifier')).toEqual([]);
    const reportsSent = Number((await owner.query(`SELECT count(*) FROM meter_reports WHERE value > 0`)).rows[0].count);
    expect(fake.state.meterEvents).toHaveLength(reportsSent);
    fake.clearFaults();

    // The metrics tell the same story: nothing left behind, and the faults counted.
    expect(await metric('nimbus_billing_unreported_rows')).toBe(0);
    expect(await metric('nimbus_billing_unreported_usage_seconds')).toBe(0);
    expect(await metric('nimbus_billing_lag_seconds')).toBe(0);
    const outcomes = { accepted: 0, duplicate: 0, rate_limited: 0, failed: 0 };
    for (const o of Object.keys(outcomes) as Array<keyof typeof outcomes>) outcomes[o] = await metric('nimbus_billing_meter_events_total', { outcome: o });
    expect(outcomes.rate_limited).toBeGreaterThanOrEqual(3);
    expect(outcomes.failed).toBeGreaterThan(0);
    expect(outcomes.duplicate).toBeGreaterThan(0);
    // Every report Stripe holds was accepted at least once (killed reporters' sends are counted too).
    expect(outcomes.accepted + outcomes.duplicate).toBeGreaterThanOrEqual(reportsSent);
    expect(await metric('nimbus_billing_ledger_rows_claimed_total')).toBeGreaterThan(300);

    // Reconciliation agrees, in code and from the command line.
    const period = periodOf(new Date());
    const rows = await reconcile({
      query: cluster.cp.cx.db.query.bind(cluster.cp.cx.db), stripe: fake.client(), catalog: billing.catalog!, start: period.start, end: period.end,
    });
    expect(rows.length).toBeGreaterThanOrEqual(9);
    expect(rows.filter((r) => r.diffMs !== 0n)).toEqual([]);
    const cli = await runReconcile(period.key);
    expect(cli.code).toBe(0);
    expect(cli.stdout).toContain('ledger and Stripe agree');

    // A billable row Stripe has not received is a difference: exit code 1.
    const [late] = await wave([tenants[0]], 1);
    await owner.query(`UPDATE usage_ledger SET billable = true, reason = NULL WHERE job_id = $1`, [late.jobId]);
    const behind = await runReconcile(period.key);
    expect(behind.code).toBe(1);
    expect(behind.stdout).toMatch(/1 difference\(s\)/);
  });
});

async function runReconcile(period: string): Promise<{ code: number; stdout: string }> {
  const env = { ...process.env, ...stripeEnv(fake), DATABASE_URL: cluster.api.env.DATABASE_URL, LOG_LEVEL: 'silent' };
  const script = join(__dirname, '..', '..', 'dist', 'src', 'scripts', 'billing-reconcile.js');
  try {
    const { stdout } = await promisify(execFile)(process.execPath, [script, '--period', period], { env });
    return { code: 0, stdout };
  } catch (err) {
    const e = err as { code: number; stdout: string; stderr: string };
    return { code: e.code, stdout: e.stdout + e.stderr };
  }
}

describe('a reporter pass', () => {
  it('sends at most its share per call and leaves the rest for the next call', async () => {
    const t = await signUpTenant(cluster.api, 'Paced');
    const { rows: [{ a }] } = await owner.query('SELECT stripe_billing_anchor AS a FROM tenants WHERE id = $1', [t.tenantId]);
    await new Promise((r) => setTimeout(r, Math.max(0, +a + 3100 - Date.now())));
    await wave([t], 40);
    const r = cluster.cp.billing.newReporter(reporterOptions);
    await r.claim();
    const { rows: [{ n }] } = await owner.query(`SELECT count(*)::int AS n FROM meter_reports WHERE status = 'PENDING'`);
    expect(n).toBeGreaterThan(5);
    expect(await r.sendDue(3)).toBe(3);
    expect(await r.sendDue(1000)).toBe(n - 3);
    expect(await r.sendDue()).toBe(0);
  });
});
