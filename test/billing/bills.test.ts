import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { AddressInfo } from 'node:net';
import type { Client } from 'pg';
import type { FakeStripe } from '../../src/modules/billing/fake-stripe';
import { verifyWebhookSignature } from '../../src/modules/compute/webhook-signing';
import { hashPassword } from '../../src/modules/tenancy/credentials';
import type { NodeEvent } from '../../src/platform/queue/messages';
import { createApiKey, signUpTenant, uniqueEmail, type TestTenant } from '../support/api';
import { startCluster, waitFor, type TestCluster } from '../support/cluster';
import { ownerClient } from '../support/db';
import { PREDICT, PREDICTION } from '../support/gql';
import { CREATE_TRAINING, gqlOf, upload } from '../training/support';
import { CURRENT_BILL, INVOICE, INVOICES, SET_SPEND_LIMIT, USAGE, startFake, stripeEnv } from './support';

let fake: FakeStripe;
let cluster: TestCluster;
let owner: Client;
const dataDir = mkdtempSync(join(tmpdir(), 'nimbus-billing-test-'));

beforeAll(async () => {
  fake = await startFake();
  cluster = await startCluster({ agents: [{ name: 'cpu-1', devices: 2 }], apiOverrides: stripeEnv(fake, { DATA_DIR: dataDir }) });
  owner = await ownerClient();
});
afterAll(async () => {
  await owner.end();
  await cluster.close();
  await fake.close();
  rmSync(dataDir, { recursive: true, force: true });
});

const gql = (q: string, v: Record<string, unknown>, t: TestTenant | string) => cluster.api.gql(q, v, typeof t === 'string' ? t : t.token);
const UPDATE_WEBHOOK_SETTINGS = `mutation($input: UpdateWebhookSettingsInput!) { updateWebhookSettings(input: $input) { url signingSecret } }`;
const code = (res: { errors?: Array<{ extensions?: Record<string, any> }> }) => res.errors?.[0]?.extensions?.code;
const customerOf = async (t: TestTenant) => (await owner.query('SELECT stripe_customer_id FROM tenants WHERE id = $1', [t.tenantId])).rows[0].stripe_customer_id as string;

interface UsageSpec { service: string; kind: 'PREDICTION' | 'TRAINING' | 'TRIAL'; hardware: 'CPU' | 'GPU'; ms: number; devices?: number; stale?: boolean }

/** Ledger rows through the real recording path: a job row, then its attempt's end as a node reports it (sent twice). */
async function recordUsage(t: TestTenant, specs: UsageSpec[]): Promise<string[]> {
  const events: NodeEvent[] = [];
  const ids: string[] = [];
  for (const s of specs) {
    const devices = s.devices ?? 1;
    const { rows: [job] } = await owner.query(
      `INSERT INTO jobs (tenant_id, kind, service, status, hardware, devices, attempt, node_id, started_at)
       VALUES ($1, $2, $3, $7, $4, $5, $6, 'cpu-x', now()) RETURNING id`,
      [t.tenantId, s.kind, s.service, s.hardware, devices, s.stale ? 2 : 1, s.stale ? 'SUCCEEDED' : 'RUNNING'],
    );
    ids.push(job.id);
    const endedAt = Date.now(); // after the subscription began, as any real usage is
    events.push({
      type: 'ended', jobId: job.id, attempt: 1, node: 'cpu-x', status: 'SUCCEEDED', output: null,
      startedAt: endedAt - s.ms / devices, endedAt, devices, hardware: s.hardware,
    });
  }
  await cluster.cp.recorder.handleBatch([...events, ...events]);
  return ids;
}

const allReported = (t: TestTenant) => async () =>
  (await owner.query('SELECT count(*)::int AS n FROM usage_ledger WHERE tenant_id = $1 AND billable AND reported_at IS NULL', [t.tenantId])).rows[0].n === 0;

async function memberOf(t: TestTenant, role: 'MEMBER' | 'BILLING'): Promise<string> {
  const email = uniqueEmail(role.toLowerCase());
  const u = await owner.query('INSERT INTO users (email, password_hash) VALUES ($1, $2) RETURNING id', [email, await hashPassword('member password')]);
  await owner.query('INSERT INTO memberships (tenant_id, user_id, role) VALUES ($1, $2, $3)', [t.tenantId, u.rows[0].id, role]);
  const login = await cluster.api.gql('mutation($e: String!, $p: String!) { logIn(email: $e, password: $p) { token } }', { e: email, p: 'member password' });
  return login.data.logIn.token;
}

describe('usage and the current bill', () => {
  let a: TestTenant;
  beforeAll(async () => {
    a = await signUpTenant(cluster.api, 'Usage');
    await recordUsage(a, [
      { service: 'system.echo', kind: 'PREDICTION', hardware: 'CPU', ms: 90_000 },
      { service: 'system.echo', kind: 'PREDICTION', hardware: 'CPU', ms: 30_000 },
      { service: 'vision.faces', kind: 'PREDICTION', hardware: 'CPU', ms: 45_000 },
      { service: 'vision.detect-objects', kind: 'PREDICTION', hardware: 'GPU', ms: 20_000 },
      { service: 'training:tabular', kind: 'TRAINING', hardware: 'CPU', ms: 120_000, devices: 2 },
      { service: 'training:tabular', kind: 'TRIAL', hardware: 'GPU', ms: 30_000 },
      { service: 'system.echo', kind: 'PREDICTION', hardware: 'CPU', ms: 999_000, stale: true },
    ]);
  });

  it('groups the ledger by service and hardware and prices it from the price book', async () => {
    const from = new Date(Date.now() - 3600_000).toISOString();
    const to = new Date(Date.now() + 3600_000).toISOString();
    const res = await gql(USAGE, { from, to }, a);
    expect(res.errors).toBeUndefined();
    const usd = (amountCents: number) => ({ amountCents, currency: 'usd' });
    expect(res.data.usage).toEqual({
      totalSeconds: 335,
      // per meter: 165 s CPU predictions × 1.2¢/min = 3.3¢ → 3; 20 s GPU × 18 = 6; 120 s CPU training × 2.4 = 4.8 → 5; 30 s GPU × 24 = 12
      total: usd(26),
      rows: [
        { service: 'system.echo', hardware: 'CPU', seconds: 120, minutes: 2, cost: usd(2) },
        { service: 'training:tabular', hardware: 'CPU', seconds: 120, minutes: 2, cost: usd(5) },
        { service: 'training:tabular', hardware: 'GPU', seconds: 30, minutes: 0.5, cost: usd(12) },
        { service: 'vision.detect-objects', hardware: 'GPU', seconds: 20, minutes: 20 / 60, cost: usd(6) },
        { service: 'vision.faces', hardware: 'CPU', seconds: 45, minutes: 0.75, cost: usd(1) },
      ],
    });
    const before = await gql(USAGE, { from, to: new Date(Date.now() - 1800_000).toISOString() }, a);
    expect(before.data.usage).toEqual({ totalSeconds: 0, total: usd(0), rows: [] });
    expect(code(await gql(USAGE, { from: to, to: from }, a))).toBe('BAD_USER_INPUT');
  });

  it('any range, whole days or not, sums exactly what the ledger holds in it (whole days come from day totals)', async () => {
    const u = await signUpTenant(cluster.api, 'Usage days');
    const [jobId] = await recordUsage(u, [{ service: 'system.echo', kind: 'PREDICTION', hardware: 'CPU', ms: 1 }]);
    const DAY = 86_400_000;
    const today = Math.floor(Date.now() / DAY) * DAY;
    // Ends on and around UTC midnights over three days, at millisecond offsets (attempts 10, 11, …).
    const ends = [today - 2 * DAY + 5, today - DAY - 1, today - DAY, today - DAY + 1, today - 1, today, today + 1000, Date.now() - 10];
    for (const [i, at] of ends.entries()) {
      await owner.query(
        `INSERT INTO usage_ledger (tenant_id, job_id, attempt, job_kind, service, hardware, devices, started_at, ended_at, billable_ms, billable)
         VALUES ($1, $2, $3, 'PREDICTION', $4, 'CPU', 1, to_timestamp($5 / 1000.0) - interval '1 second', to_timestamp($5 / 1000.0), $6, $7)`,
        [u.tenantId, jobId, 10 + i, i % 2 ? 'language.sentiment' : 'vision.ocr', at, 1000 * (i + 1), i !== 3],
      );
    }
    const iso = (ms: number) => new Date(ms).toISOString();
    const ranges: Array<[number, number]> = [
      [today - 3 * DAY, today + DAY], // whole days only, and more
      [today - 2 * DAY + 6, today + 1], // partial first and last day around whole ones
      [today - DAY - 1, today - DAY + 1], // across one midnight, no whole day
      [today - DAY, today], // exactly one whole day
      [today - DAY + 1, today - 1], // inside one day
      [today - 2 * DAY, today + 1000], // the last end excluded (to is exclusive)
    ];
    for (const [from, to] of ranges) {
      const expected = await owner.query(
        `SELECT service, sum(billable_ms)::int AS ms FROM usage_ledger
          WHERE tenant_id = $1 AND billable AND ended_at >= to_timestamp($2 / 1000.0) AND ended_at < to_timestamp($3 / 1000.0)
          GROUP BY service ORDER BY service`, [u.tenantId, from, to],
      );
      const got = (await gql(USAGE, { from: iso(from), to: iso(to) }, u)).data.usage;
      expect({ range: [iso(from), iso(to)], rows: got.rows.map((r: { service: string; seconds: number }) => ({ service: r.service, ms: Math.round(r.seconds * 1000) })) })
        .toEqual({ range: [iso(from), iso(to)], rows: expected.rows });
    }
  });

  it('shows the open period as Stripe invoices it, equal to the usage total to the cent', async () => {
    await waitFor(allReported(a), 15_000, 'the meter reporter to send the usage');
    const res = await gql(CURRENT_BILL, {}, a);
    expect(res.errors).toBeUndefined();
    const bill = res.data.currentBill;
    const usage = (await gql(USAGE, { from: bill.periodStart, to: bill.periodEnd }, a)).data.usage;
    expect(bill.total).toEqual(usage.total);
    expect(bill.total.amountCents).toBe(26);
    expect(bill.spendLimit).toBeNull();
    const lines = [...bill.lines].sort((x: any, y: any) => x.unitAmountCents.localeCompare(y.unitAmountCents));
    expect(lines.map((l: any) => [l.unitAmountCents, l.minutes, l.amount.amountCents])).toEqual([
      ['1.2', 2.75, 3], ['18', 20 / 60, 6], ['2.4', 2, 5], ['24', 0.5, 12],
    ]);
    expect(lines[0].description).toContain('Nimbus prediction CPU time');
    expect(new Date(bill.periodEnd).getTime()).toBeGreaterThan(Date.now());
  });

  it('prices services from the price book, which refuses prices Stripe could not bill exactly', async () => {
    const services = (await gql('{ services { id pricing { unit unitAmountCents } } }', {}, a)).data.services;
    expect(services.find((s: any) => s.id === 'system.echo').pricing).toEqual({ unit: 'CPU minute', unitAmountCents: '1.2' });
    await expect(owner.query(`UPDATE price_book SET unit_amount_cents_per_minute = 1.000001 WHERE job_kind = 'PREDICTION' AND hardware = 'CPU'`))
      .rejects.toThrow(/price_book_unit_amount_cents_per_minute_check/);
  });
});

describe('invoices and roles', () => {
  let a: TestTenant;
  let b: TestTenant;
  beforeAll(async () => {
    a = await signUpTenant(cluster.api, 'Inv A');
    b = await signUpTenant(cluster.api, 'Inv B');
  });

  it('lists the tenant\'s invoices from Stripe; another tenant\'s invoice id is NOT_FOUND', async () => {
    const mine = fake.finalizeInvoice(await customerOf(a), { status: 'paid' });
    const theirs = fake.finalizeInvoice(await customerOf(b));
    const listed = (await gql(INVOICES, {}, a)).data.invoices;
    expect(listed).toEqual([{
      id: mine.id, number: mine.number, status: 'paid', total: { amountCents: mine.total, currency: 'usd' },
      periodStart: new Date(mine.period_start * 1000).toISOString(), periodEnd: new Date(mine.period_end * 1000).toISOString(),
      hostedInvoiceUrl: mine.hosted_invoice_url,
    }]);
    expect((await gql(INVOICE, { id: mine.id }, a)).data.invoice).toMatchObject({ id: mine.id, status: 'paid' });
    expect((await gql(INVOICE, { id: theirs.id }, b)).data.invoice.id).toBe(theirs.id);
    for (const id of [theirs.id, 'in_doesnotexist', '../v1/customers']) expect(code(await gql(INVOICE, { id }, a))).toBe('NOT_FOUND');
  });

  it('a MEMBER cannot read bills or set the spend limit; BILLING and API keys with the BILLING scope can', async () => {
    const member = await memberOf(a, 'MEMBER');
    const range = { from: new Date(Date.now() - 3600_000).toISOString(), to: new Date().toISOString() };
    for (const [q, v] of [[USAGE, range], [CURRENT_BILL, {}], [INVOICES, {}], [INVOICE, { id: 'in_x' }], [SET_SPEND_LIMIT, { amountCents: 5 }]] as const) {
      expect(code(await gql(q, v, member))).toBe('FORBIDDEN');
    }
    const billing = await memberOf(a, 'BILLING');
    expect((await gql(CURRENT_BILL, {}, billing)).data.currentBill.total.currency).toBe('usd');
    expect((await gql(INVOICES, {}, billing)).data.invoices).toHaveLength(1);
    const key = await createApiKey(cluster.api, a.token, ['BILLING']);
    expect((await gql(USAGE, range, key.secret)).data.usage.totalSeconds).toBe(0);
    const predictOnly = await createApiKey(cluster.api, a.token, ['PREDICT', 'READ']);
    expect(code(await gql(CURRENT_BILL, {}, predictOnly.secret))).toBe('FORBIDDEN');
  });
});

describe('spend limits', () => {
  const echo = (extra: Record<string, unknown> = {}) => ({ input: { service: 'system.echo', input: { message: 'hi', ...extra }, wait: 10 } });

  it('month totals (what the limit reads) follow the ledger: each billable row once, in the UTC month it ended; replays and unbillable rows add nothing', async () => {
    const d = await signUpTenant(cluster.api, 'Totals');
    for (let i = 0; i < 3; i++) expect((await gql(PREDICT, echo(), d)).data.predict.status).toBe('SUCCEEDED');
    await recordUsage(d, [
      { service: 'system.echo', kind: 'PREDICTION', hardware: 'CPU', ms: 1_000 },
      { service: 'system.echo', kind: 'PREDICTION', hardware: 'GPU', ms: 2_000, devices: 2 },
      { service: 'system.echo', kind: 'PREDICTION', hardware: 'CPU', ms: 5_000, stale: true },
    ]);
    // A late row whose attempt ended last month counts there, not in this month.
    const [jobId] = await recordUsage(d, [{ service: 'system.echo', kind: 'PREDICTION', hardware: 'CPU', ms: 10 }]);
    await owner.query(
      `INSERT INTO usage_ledger (tenant_id, job_id, attempt, job_kind, service, hardware, devices, started_at, ended_at, billable_ms, billable)
       VALUES ($1, $2, 7, 'PREDICTION', 'system.echo', 'CPU', 1, date_trunc('month', now(), 'UTC') - interval '2 seconds',
               date_trunc('month', now(), 'UTC') - interval '1 second', 1000, true)`, [d.tenantId, jobId],
    );
    const fromLedger = await owner.query(
      `SELECT date_trunc('month', ended_at, 'UTC') AS month, job_kind, hardware, sum(billable_ms)::text AS ms
         FROM usage_ledger WHERE tenant_id = $1 AND billable GROUP BY 1, 2, 3 ORDER BY 1, 2, 3`, [d.tenantId],
    );
    const totals = await owner.query(
      `SELECT month, job_kind, hardware, billable_ms::text AS ms FROM usage_month_totals WHERE tenant_id = $1 ORDER BY 1, 2, 3`, [d.tenantId],
    );
    expect(totals.rows).toEqual(fromLedger.rows);
    expect(totals.rows).toHaveLength(3); // last month's CPU, this month's CPU and GPU
    const gpu = totals.rows.find((r) => r.hardware === 'GPU');
    expect(gpu.ms).toBe('2000');
  });

  it('refuses new jobs with SPEND_LIMIT_REACHED at the limit (predict, createTrainingJob, any submitted job); other tenants are unaffected', async () => {
    const c = await signUpTenant(cluster.api, 'Capped');
    const other = await signUpTenant(cluster.api, 'Uncapped');
    const set = await gql(SET_SPEND_LIMIT, { amountCents: 10 }, c);
    expect(set.data.setSpendLimit).toEqual({ spendLimit: { amountCents: 10, currency: 'usd' } });
    expect(code(await gql(SET_SPEND_LIMIT, { amountCents: -1 }, c))).toBe('BAD_USER_INPUT');
    const audit = await owner.query(`SELECT data FROM audit_events WHERE tenant_id = $1 AND action = 'billing.spend_limit_set'`, [c.tenantId]);
    expect(audit.rows).toEqual([{ data: { amountCents: 10, previousCents: null } }]);

    // 7.6¢ used + up to 1.2¢ for one CPU minute stays under 10¢
    await recordUsage(c, [{ service: 'system.echo', kind: 'PREDICTION', hardware: 'CPU', ms: 380_000 }]);
    expect((await gql(PREDICT, echo(), c)).data.predict.status).toBe('SUCCEEDED');
    // now 10¢ are used: at the limit
    await recordUsage(c, [{ service: 'system.echo', kind: 'PREDICTION', hardware: 'CPU', ms: 120_000 }]);
    const refused = await gql(PREDICT, echo(), c);
    expect(code(refused)).toBe('SPEND_LIMIT_REACHED');
    expect(refused.errors![0].extensions).toMatchObject({ spendLimitCents: 10 });
    const jobs = cluster.api.app.services.jobs;
    for (const kind of ['TRAINING', 'TRIAL'] as const) {
      await expect(jobs.submit(c.tenantId, { kind, service: 'training:test', input: {}, hardware: 'CPU', devices: 1 }))
        .rejects.toMatchObject({ code: 'SPEND_LIMIT_REACHED' });
    }
    // and the training mutation, through the same guards
    const csv = ['x,y,label', ...Array.from({ length: 40 }, (_, i) => `${i},${(i * 7) % 11},${i % 2 ? 'odd' : 'even'}`)].join('\n');
    const { datasetId } = await upload(gqlOf(cluster), c, 'spend', csv);
    const training = await gql(CREATE_TRAINING, {
      input: { datasetId, modelName: 'capped', task: 'TABULAR_CLASSIFICATION', targetColumn: 'label', algorithm: 'logistic_regression' },
    }, c);
    expect(code(training)).toBe('SPEND_LIMIT_REACHED');
    expect((await owner.query(`SELECT count(*)::int AS n FROM jobs WHERE tenant_id = $1 AND kind = 'TRAINING'`, [c.tenantId])).rows[0].n).toBe(0);

    expect((await gql(PREDICT, echo(), other)).data.predict.status).toBe('SUCCEEDED');
    // Raising the limit lets the tenant work again.
    await gql(SET_SPEND_LIMIT, { amountCents: 1000 }, c);
    expect((await gql(PREDICT, echo(), c)).data.predict.status).toBe('SUCCEEDED');
    expect((await gql(CURRENT_BILL, {}, c)).data.currentBill.spendLimit).toEqual({ amountCents: 1000, currency: 'usd' });
  });

  describe('notifications', () => {
    let server: Server;
    const received: Array<{ headers: IncomingMessage['headers']; body: string }> = [];
    beforeAll(async () => {
      server = createServer((req, res) => {
        let body = '';
        req.on('data', (ch) => (body += ch));
        req.on('end', () => {
          received.push({ headers: req.headers, body });
          res.writeHead(204).end();
        });
      });
      await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    });
    afterAll(() => new Promise((r) => server.close(r)));

    it('notifies at 80% and at 100% of the limit, once per period each, by audit event and signed webhook', async () => {
      const d = await signUpTenant(cluster.api, 'Notified');
      const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/billing`;
      expect((await gql(UPDATE_WEBHOOK_SETTINGS, { input: { url } }, d)).data.updateWebhookSettings.url).toBe(url);
      await gql(SET_SPEND_LIMIT, { amountCents: 100 }, d);
      const notes = async () => (await owner.query(
        `SELECT data FROM audit_events WHERE tenant_id = $1 AND action = 'billing.spend_threshold' ORDER BY created_at`, [d.tenantId])).rows.map((r) => r.data);

      await recordUsage(d, [{ service: 'vision.detect-objects', kind: 'PREDICTION', hardware: 'GPU', ms: 270_000 }]); // 81¢
      await waitFor(async () => (await notes()).length === 1 && received.length === 1, 10_000, 'the 80% notification');
      await recordUsage(d, [{ service: 'vision.detect-objects', kind: 'PREDICTION', hardware: 'GPU', ms: 60_000 }]); // 99¢
      await new Promise((r) => setTimeout(r, 2500));
      expect(await notes()).toHaveLength(1);
      await recordUsage(d, [{ service: 'vision.detect-objects', kind: 'PREDICTION', hardware: 'GPU', ms: 10_000 }]); // 102¢
      await waitFor(async () => (await notes()).length === 2 && received.length === 2, 10_000, 'the 100% notification');
      await new Promise((r) => setTimeout(r, 2500));

      const period = new Date().toISOString().slice(0, 7);
      expect(await notes()).toEqual([
        { period, thresholdPercent: 80, spendLimitCents: 100, periodCostCents: 81 },
        { period, thresholdPercent: 100, spendLimitCents: 100, periodCostCents: 102 },
      ]);
      expect(received).toHaveLength(2);
      for (const threshold of ['80', '100']) expect(await counter('nimbus_billing_spend_notifications_total', { threshold })).toBeGreaterThanOrEqual(1);
      const { signingSecret } = (await gql(UPDATE_WEBHOOK_SETTINGS, { input: { url } }, d)).data.updateWebhookSettings;
      for (const [i, r] of received.entries()) {
        expect(verifyWebhookSignature(signingSecret, r.headers as Record<string, string>, r.body)).toBe(true);
        expect(JSON.parse(r.body)).toMatchObject({
          type: 'billing.spend_threshold',
          data: { period, thresholdPercent: [80, 100][i], spendLimit: { amountCents: 100, currency: 'usd' } },
        });
      }
    });
  });

  it('cancels a running job once the month passes the limit by more than a minute of its price', async () => {
    const e = await signUpTenant(cluster.api, 'Runaway');
    const started = await gql(PREDICT, { input: { service: 'system.echo', input: { sleepMs: 60_000 }, wait: 0 } }, e);
    const id = started.data.predict.id;
    await waitFor(async () => (await gql(PREDICTION, { id }, e)).data.prediction.status === 'RUNNING', 10_000, 'RUNNING');
    await recordUsage(e, [{ service: 'system.echo', kind: 'PREDICTION', hardware: 'CPU', ms: 300_000 }]); // 6¢
    await gql(SET_SPEND_LIMIT, { amountCents: 1 }, e);
    await waitFor(async () => (await gql(PREDICTION, { id }, e)).data.prediction.status === 'CANCELED', 10_000, 'the job to be canceled');
    expect((await gql(PREDICTION, { id }, e)).data.prediction.error).toEqual({ code: 'SPEND_LIMIT_REACHED', message: expect.any(String) });
    await waitFor(async () => (await owner.query('SELECT 1 FROM usage_ledger WHERE job_id = $1 AND billable', [id])).rowCount === 1, 15_000, 'the attempt to be billed');
    expect((await owner.query(`SELECT 1 FROM audit_events WHERE object_id = $1 AND action = 'billing.job_canceled'`, [id])).rowCount).toBe(1);
    expect(await counter('nimbus_billing_spend_cancellations_total')).toBeGreaterThanOrEqual(1);
  });
});

/** A counter's total over its labels (matching `labels`) in the control plane's registry. */
async function counter(name: string, labels: Record<string, string> = {}): Promise<number> {
  const { values } = await cluster.api.app.metrics.registry.getSingleMetric(name)!.get();
  return values.filter((v) => Object.entries(labels).every(([k, want]) => v.labels[k] === want)).reduce((n, v) => n + v.value, 0);
}

describe('price-book changes', () => {
  const setCpuPredictionPrice = async (cents: string) => {
    await owner.query(`UPDATE price_book SET unit_amount_cents_per_minute = $1 WHERE job_kind = 'PREDICTION' AND hardware = 'CPU'`, [cents]);
    // What `npm run stripe:setup` does: a new Price for the meter, for subscriptions created from now on.
    cluster.cp.billing.prices.forget();
    cluster.cp.billing.catalog!.forget();
    await cluster.cp.billing.catalog!.sync();
  };
  afterAll(async () => {
    await setCpuPredictionPrice('1.2');
  });
  const cpu = (minutes: number): UsageSpec => ({ service: 'system.echo', kind: 'PREDICTION', hardware: 'CPU', ms: minutes * 60_000 });
  const totals = async (t: TestTenant) => {
    await waitFor(allReported(t), 15_000, 'the meter reporter to send the usage');
    const bill = (await gql(CURRENT_BILL, {}, t)).data.currentBill;
    const usage = (await gql(USAGE, { from: bill.periodStart, to: bill.periodEnd }, t)).data.usage;
    return { usage: usage.total.amountCents, bill: bill.total.amountCents };
  };

  it('a tenant\'s usage, bill and spend limit all price at the prices its subscription carries: old subscriptions keep theirs, new ones get the new price', async () => {
    const old = await signUpTenant(cluster.api, 'Subscribed at 1.2');
    await recordUsage(old, [cpu(10)]);
    await waitFor(allReported(old), 15_000, 'the first usage to be reported');
    await setCpuPredictionPrice('2.4');
    await new Promise((r) => setTimeout(r, 5200)); // the API's price-book cache (5 s)
    await recordUsage(old, [cpu(10)]);
    const fresh = await signUpTenant(cluster.api, 'Subscribed at 2.4');
    await recordUsage(fresh, [cpu(10)]);

    const subscribed = async (t: TestTenant) =>
      (await owner.query('SELECT subscribed_prices FROM tenants WHERE id = $1', [t.tenantId])).rows[0].subscribed_prices['PREDICTION:CPU'];
    expect([await subscribed(old), await subscribed(fresh)]).toEqual(['1.2', '2.4']);
    // Stripe invoices the old subscription at its Price: 20 min × 1.2 ¢; the usage view must say the same.
    expect(await totals(old)).toEqual({ usage: 24, bill: 24 });
    expect(await totals(fresh)).toEqual({ usage: 24, bill: 24 });

    // The spend limit counts the month at 1.2 ¢ too: 24 ¢ used + a minute at 1.2 ¢ fits under 26 ¢ (at 2.4 ¢, 48 ¢ would not)...
    expect((await gql(SET_SPEND_LIMIT, { amountCents: 26 }, old)).errors).toBeUndefined();
    const fits = await gql(PREDICT, { input: { service: 'system.echo', input: { message: 'x' }, wait: 0 } }, old);
    expect(fits.errors).toBeUndefined();
    // ...and is reported at that price when it no longer fits.
    expect((await gql(SET_SPEND_LIMIT, { amountCents: 25 }, old)).errors).toBeUndefined();
    const refused = await gql(PREDICT, { input: { service: 'system.echo', input: { message: 'x' }, wait: 0 } }, old);
    expect(refused.errors?.[0]?.extensions).toMatchObject({ code: 'SPEND_LIMIT_REACHED', periodCostCents: 24 });
  });
});
