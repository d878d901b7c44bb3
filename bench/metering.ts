import 'reflect-metadata';
import { randomBytes } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { Client } from 'pg';
import { Redis } from 'ioredis';
import { createApp } from '../src/app';
import { loadEnv } from '../src/config/env';
import { prepareDatabase } from '../src/platform/db/prepare';
import { createLogger } from '../src/platform/logger';
import { Metrics } from '../src/platform/http/metrics';
import type { NodeEvent } from '../src/platform/queue/messages';
import { startFakeStripe } from '../src/modules/billing/fake-stripe';
import { METERS } from '../src/modules/billing/price-book';
import { startControlPlane } from '../src/modules/compute/control-plane/control-plane';
import { flag, intFlag, numFlag, round, type Bench, type BenchResult } from './harness';

/**
 * `npm run bench -- metering [--rows 50000] [--batch 200] [--rates 100,1000] [--send-seconds 15]`
 *
 * One run per Stripe rate (default: STRIPE_METER_EVENTS_PER_SECOND, i.e. 100, and Stripe's live
 * limit for meter events, 1000), each on a fresh database and a fresh fake Stripe whose meter-event
 * limiter is set to that rate:
 *
 *  1. ledger rows recorded per second through the real recording path: `Recorder.handleBatch` of a
 *     running control plane fed `ended` events in batches of `--batch` (what the recorder reads off
 *     the node-event stream per round), for `--rows` jobs of 3 tenants (job rows inserted first);
 *  2. the meter reporter (`MeterReporter`, the control plane's code, windows of 60 s): ledger rows
 *     claimed into the outbox per second, then meter events sent per second against the fake Stripe,
 *     with the reporter's own limit set to the same rate; usage is spread over enough minutes that
 *     there are about `--send-seconds` seconds of events to send at that rate (3 tenants × 4 meters
 *     × minutes events);
 *  3. a check that, for every tenant and meter, the fake Stripe holds exactly the ledger's
 *     billable device-ms.
 *
 * The fake's clock runs an hour more than that span back while tenants sign up, so their
 * subscriptions (and the meter-event windows aligned on them) begin before the generated usage.
 * Database: BENCH_METERING_DATABASE_URL or postgres://postgres@127.0.0.1:5432/nimbus_bench_metering,
 * dropped and re-created for each run. Redis: a random prefix, deleted afterwards.
 */

const BENCH_DATABASE_URL = process.env.BENCH_METERING_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/nimbus_bench_metering';


async function freshDatabase(url: string): Promise<void> {
  const admin = new URL(url);
  const name = admin.pathname.slice(1);
  admin.pathname = '/postgres';
  const c = new Client({ connectionString: admin.toString() });
  await c.connect();
  try {
    await c.query(`DROP DATABASE IF EXISTS "${name}" WITH (FORCE)`);
  } finally {
    await c.end();
  }
}

interface RunResult {
  rate: number;
  rows: number;
  recordSeconds: number;
  claimSeconds: number;
  reports: number;
  sendSeconds: number;
  rateLimited: number;
  exact: boolean;
}

async function runOnce(rate: number, rows: number, batch: number, minutes: number): Promise<RunResult> {
  await freshDatabase(BENCH_DATABASE_URL);
  let clockOffsetMs = (minutes + 60) * 60_000;
  const fake = await startFakeStripe({ meterEventRateLimitPerSecond: rate, recordRequests: false, clock: () => Date.now() - clockOffsetMs });
  const prefix = `nimbus-bench-metering-${randomBytes(4).toString('hex')}`;
  const env = loadEnv({
    ...process.env, NODE_ENV: 'test', DATABASE_URL: BENCH_DATABASE_URL, REDIS_PREFIX: prefix, LOG_LEVEL: 'silent', SEED_DEMO: 'false',
    STRIPE_SECRET_KEY: 'sk_test_bench', STRIPE_API_BASE: fake.url, STRIPE_WEBHOOK_SECRET: fake.webhookSecret,
    STRIPE_METER_EVENTS_PER_SECOND: String(rate),
  });
  await prepareDatabase(env);
  const app = await createApp(env, { log: createLogger('silent') });
  // The bench's jobs have no node: keep the reconciler from treating them as lost while they are recorded.
  const cp = await startControlPlane(env, {
    log: createLogger('silent'), metrics: new Metrics(),
    settings: { orphanAfterMs: 3600_000, redispatchAfterMs: 3600_000, reconcileIntervalMs: 3600_000 },
  });
  await cp.billing.reporter!.stop();
  const db = cp.cx.db;
  try {
    const tenants: string[] = [];
    for (let i = 0; i < 3; i++) {
      const r = await app.services.tenancy.signUp({ email: `bench-${prefix}-${i}@example.test`, password: 'bench password 1', tenantName: `Bench ${i}` });
      tenants.push(r.tenant.id);
    }
    clockOffsetMs = 0;

    const jobs: Array<{ id: string; hardware: 'CPU' | 'GPU'; devices: number }> = await db.query(
      `INSERT INTO jobs (tenant_id, kind, service, status, hardware, devices, attempt, node_id, started_at)
       SELECT ($1::uuid[])[1 + i % 3], (ARRAY['PREDICTION','TRAINING','TRIAL'])[1 + (i / 3) % 3], 'bench.echo', 'RUNNING',
              (ARRAY['CPU','GPU'])[1 + (i / 9) % 2], 1 + i % 4, 1, 'bench-node', now()
         FROM generate_series(0, $2 - 1) AS i
       RETURNING id, hardware, devices`,
      [tenants, rows],
    );
    const now = Date.now();
    const spanMs = minutes * 60_000;
    const events: NodeEvent[] = jobs.map((j, i) => {
      const endedAt = now - Math.floor(((i + 0.5) / jobs.length) * spanMs);
      return {
        type: 'ended', jobId: j.id, attempt: 1, node: 'bench-node', status: 'SUCCEEDED', output: { ok: true },
        startedAt: endedAt - (500 + ((i * 7919) % 90_000)), endedAt, devices: j.devices, hardware: j.hardware,
      };
    });

    const t0 = performance.now();
    for (let i = 0; i < events.length; i += batch) await cp.recorder.handleBatch(events.slice(i, i + batch));
    const recordSeconds = (performance.now() - t0) / 1000;
    const [{ n }] = await db.query('SELECT count(*)::int AS n FROM usage_ledger WHERE billable');
    if (n !== rows) throw new Error(`expected ${rows} billable ledger rows, found ${n}`);

    const reporter = cp.billing.newReporter({ eventsPerSecond: rate });
    const t1 = performance.now();
    while ((await reporter.claim()) > 0);
    const claimSeconds = (performance.now() - t1) / 1000;
    const pending = async () => Number((await db.query(`SELECT count(*) FROM meter_reports WHERE status = 'PENDING'`))[0].count);
    const reports = await pending();
    const t2 = performance.now();
    while ((await reporter.sendDue()) > 0 || (await pending()) > 0) await new Promise((r) => setTimeout(r, 5));
    const sendSeconds = (performance.now() - t2) / 1000;

    const customers: Array<{ id: string; c: string }> = await db.query('SELECT id, stripe_customer_id AS c FROM tenants WHERE id = ANY($1)', [tenants]);
    const ledger: Array<{ tenant_id: string; kind: string; hardware: string; ms: string }> = await db.query(
      `SELECT tenant_id, CASE WHEN job_kind = 'PREDICTION' THEN 'PREDICTION' ELSE 'TRAINING' END AS kind, hardware, sum(billable_ms)::text AS ms
         FROM usage_ledger WHERE billable GROUP BY 1, 2, 3`,
    );
    const exact = customers.every(({ id, c }) => METERS.every((m) =>
      fake.meterTotal(m.eventName, c) === Number(ledger.find((l) => l.tenant_id === id && l.kind === m.kind && l.hardware === m.hardware)?.ms ?? 0)));
    return { rate, rows, recordSeconds, claimSeconds, reports, sendSeconds, rateLimited: reporter.stats.rateLimited, exact };
  } finally {
    await cp.stop();
    await app.close();
    await fake.close();
    const redis = new Redis(env.REDIS_URL);
    const keys = await redis.keys(`${prefix}*`);
    if (keys.length) await redis.del(...keys);
    redis.disconnect();
  }
}

const bench: Bench = async (args) => {
  const rows = intFlag(args, 'rows', 50000);
  const batch = intFlag(args, 'batch', 200);
  const sendSeconds = numFlag(args, 'send-seconds', 15);
  const configured = Number(process.env.STRIPE_METER_EVENTS_PER_SECOND ?? 100);
  const rates = (flag(args, 'rates') ?? `${configured},1000`).split(',').map(Number).filter((r, i, all) => r > 0 && all.indexOf(r) === i);
  const results: RunResult[] = [];
  for (const rate of rates) {
    const minutes = Math.ceil((rate * sendSeconds) / 12);
    console.log(`rate ${rate}/s: ${rows} jobs, batches of ${batch}, usage over ${minutes} min …`);
    results.push(await runOnce(rate, rows, batch, minutes));
  }
  const out: BenchResult['rows'] = results.flatMap((r) => [
    { rate: `${r.rate}/s`, phase: 'ledger rows recorded (Recorder.handleBatch)', items: r.rows, seconds: round(r.recordSeconds, 2), 'per second': Math.round(r.rows / r.recordSeconds), 'of target/limit': `${Math.round((r.rows / r.recordSeconds / 10_000) * 100)}% of 10,000` },
    { rate: `${r.rate}/s`, phase: 'ledger rows claimed into meter reports', items: r.rows, seconds: round(r.claimSeconds, 2), 'per second': Math.round(r.rows / r.claimSeconds), 'of target/limit': `${r.reports} reports` },
    { rate: `${r.rate}/s`, phase: 'meter events sent to the fake Stripe', items: r.reports, seconds: round(r.sendSeconds, 2), 'per second': Math.round(r.reports / r.sendSeconds), 'of target/limit': `${Math.round((r.reports / r.sendSeconds / r.rate) * 100)}% of ${r.rate}/s (${r.rateLimited} × 429)` },
  ]);
  return {
    name: 'metering',
    rows: out,
    summary: {
      ledgerRowsPerSecond: results.map((r) => Math.round(r.rows / r.recordSeconds)),
      ledgerTargetMet: results.every((r) => r.rows / r.recordSeconds >= 10_000),
      meterEventsPerSecond: Object.fromEntries(results.map((r) => [`limit ${r.rate}/s`, round(r.reports / r.sendSeconds, 1)])),
      reporterAtConfiguredRate: results.every((r) => r.reports / r.sendSeconds >= 0.9 * r.rate),
      stripeEqualsLedgerExactly: results.every((r) => r.exact),
      note: 'events per second over the whole send phase (from the first lease to the last report marked SENT), token bucket and fake limiter at the same rate',
    },
  };
};

export default bench;
