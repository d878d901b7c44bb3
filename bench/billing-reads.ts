import 'reflect-metadata';
import { performance } from 'node:perf_hooks';
import { Client } from 'pg';
import { createApp } from '../src/app';
import { loadEnv } from '../src/config/env';
import { prepareDatabase } from '../src/platform/db/prepare';
import type { Principal } from '../src/modules/tenancy/principal';
import { intFlag, latencyStats, round, type Bench } from './harness';
import { signUpBenchTenant } from './tenant';

/**
 * `npm run bench -- billing-reads [--rows 200000] [--calls 40]`: the reads of billing that grow with
 * a tenant's usage, on one tenant whose ledger holds `--rows` billable rows spread over the last 30
 * days (inserted once per run, in one statement, so the ledger's totals trigger runs as it does for a
 * batch of ends):
 * - the spend-limit check every submitted job of a capped tenant runs (`BillingGuard`, which reads
 *   `usage_month_totals`), against the month's ledger sum it replaced, in the same run;
 * - `usage(from, to)` over 30 days (`BillingService.usage`: whole days from `usage_day_totals`, the
 *   partial first and last day from the ledger), against the plain ledger sum.
 * Both sides run on the API's own pool and role, in a tenant transaction, and must agree.
 *
 * Database: BENCH_BILLING_DATABASE_URL or postgres://postgres@127.0.0.1:5432/nimbus_bench_billing.
 */
const BENCH_DATABASE_URL = process.env.BENCH_BILLING_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/nimbus_bench_billing';

const OLD_MONTH_SUM = `SELECT job_kind, hardware, sum(billable_ms)::text AS ms FROM usage_ledger
  WHERE tenant_id = $1 AND billable AND ended_at >= date_trunc('month', now(), 'UTC') GROUP BY job_kind, hardware`;
const OLD_USAGE_SUM = `SELECT service, hardware, job_kind, sum(billable_ms)::text AS ms FROM usage_ledger
  WHERE tenant_id = $1 AND billable AND ended_at >= $2 AND ended_at < $3 GROUP BY service, hardware, job_kind`;

const billingReads: Bench = async (args) => {
  const rowsWanted = intFlag(args, 'rows', 200_000);
  const calls = intFlag(args, 'calls', 40);
  const env = loadEnv({
    NODE_ENV: 'test', DATABASE_URL: BENCH_DATABASE_URL, REDIS_URL: process.env.REDIS_URL ?? 'redis://127.0.0.1:6379',
    REDIS_PREFIX: `nimbus-bench-billing-${process.pid}`, LOG_LEVEL: 'silent', SEED_DEMO: 'false',
  });
  await prepareDatabase(env);
  const owner = new Client({ connectionString: env.DATABASE_URL, application_name: 'nimbus-bench-owner' });
  await owner.connect();
  const app = await createApp(env);
  try {
    const signedUp = await signUpBenchTenant(app.services.tenancy, owner, 'Billing Reads Bench');
    const tenantId = signedUp.tenant.id;
    // A limit far above the usage: the check reads the month's cost and lets the job through.
    await owner.query('UPDATE tenants SET spend_limit_cents = 100000000 WHERE id = $1', [tenantId]);
    const t0 = performance.now();
    await owner.query(
      `WITH j AS (
         INSERT INTO jobs (tenant_id, kind, service, status, hardware, devices, attempt, created_at, started_at, completed_at)
         SELECT $1, 'PREDICTION', CASE WHEN i % 3 = 0 THEN 'vision.ocr' ELSE 'language.sentiment' END, 'SUCCEEDED', 'CPU', 1, 1,
                now() - make_interval(secs => i * (30 * 86400.0 / $2)), now() - make_interval(secs => i * (30 * 86400.0 / $2)),
                now() - make_interval(secs => i * (30 * 86400.0 / $2))
           FROM generate_series(1, $2) i
         RETURNING id, tenant_id, service, started_at, completed_at)
       INSERT INTO usage_ledger (tenant_id, job_id, attempt, job_kind, service, hardware, devices, node_id, started_at, ended_at, billable_ms, billable)
       SELECT tenant_id, id, 1, 'PREDICTION', service, 'CPU', 1, 'bench', started_at - interval '5 ms', completed_at, 5, true FROM j`,
      [tenantId, rowsWanted],
    );
    const loadMs = performance.now() - t0;
    // Earlier runs' deleted tenants leave dead rows: vacuumed, so runs are measured alike.
    await owner.query('VACUUM (ANALYZE) jobs, usage_ledger, usage_month_totals, usage_day_totals');

    const principal: Principal = { kind: 'user', tenantId, userId: signedUp.user.id, role: 'OWNER', scopes: new Set(['BILLING']), operator: false };
    const caller = { principal };
    const guards = app.services.jobs.guards;
    const job = { kind: 'PREDICTION' as const, service: 'language.sentiment', input: {}, hardware: 'CPU' as const, devices: 1 };
    const to = new Date();
    const from = new Date(to.getTime() - 30 * 86_400_000);
    const time = async (fn: () => Promise<unknown>) => {
      for (let i = 0; i < 3; i++) await fn();
      const ms: number[] = [];
      for (let i = 0; i < calls; i++) {
        const s = performance.now();
        await fn();
        ms.push(performance.now() - s);
      }
      return latencyStats(ms);
    };
    // The same way the API's own reads run: one statement in a tenant transaction (Database.tenantQuery).
    const inTenant = (sql: string, params: unknown[]) => app.db.tenantQuery(tenantId, sql, params);
    // The guard caches the tenant's billing state for a second, not the month's cost: every call reads the cost.
    const checkNew = await time(async () => {
      for (const g of guards) await g(tenantId, job);
    });
    const checkOld = await time(() => inTenant(OLD_MONTH_SUM, [tenantId]));
    const usageNew = await time(() => app.services.billing.usage(caller, from, to));
    const usageOld = await time(() => inTenant(OLD_USAGE_SUM, [tenantId, from, to]));

    // Both ways must give the same answer.
    const usage = await app.services.billing.usage(caller, from, to);
    const old = (await inTenant(OLD_USAGE_SUM, [tenantId, from, to])) as Array<{ ms: string }>;
    const oldSeconds = old.reduce((s, r) => s + Number(r.ms), 0) / 1000;
    const agree = Math.abs(usage.totalSeconds - oldSeconds) < 1e-9;
    const { rows: [month] } = await owner.query(
      `SELECT (SELECT coalesce(sum(billable_ms), 0) FROM usage_month_totals WHERE tenant_id = $1 AND month = date_trunc('month', now(), 'UTC'))::text AS totals,
              (SELECT coalesce(sum(billable_ms), 0) FROM usage_ledger WHERE tenant_id = $1 AND billable AND ended_at >= date_trunc('month', now(), 'UTC'))::text AS ledger`,
      [tenantId],
    );
    const monthRows = (await owner.query(
      `SELECT count(*)::int AS n FROM usage_ledger WHERE tenant_id = $1 AND ended_at >= date_trunc('month', now(), 'UTC')`, [tenantId],
    )).rows[0].n as number;

    const rows = [
      { read: 'spend check (every job of a capped tenant)', rows: monthRows, 'nimbus p50 ms': checkNew.p50, 'nimbus p99 ms': checkNew.p99,
        'ledger sum p50 ms': checkOld.p50, 'ledger sum p99 ms': checkOld.p99, 'ledger / nimbus': round(checkOld.p50 / checkNew.p50, 1) },
      { read: 'usage(from, to), 30 days', rows: rowsWanted, 'nimbus p50 ms': usageNew.p50, 'nimbus p99 ms': usageNew.p99,
        'ledger sum p50 ms': usageOld.p50, 'ledger sum p99 ms': usageOld.p99, 'ledger / nimbus': round(usageOld.p50 / usageNew.p50, 1) },
    ];
    await owner.query('DELETE FROM tenants WHERE id = $1', [tenantId]);
    return {
      name: 'billing-reads',
      rows,
      summary: {
        correct: { usageAgrees: agree, monthTotalsMs: month.totals, monthLedgerMs: month.ledger, monthAgrees: month.totals === month.ledger },
        loadSeconds: round(loadMs / 1000, 1),
        detail: { checkNew, checkOld, usageNew, usageOld },
        notes: [
          'nimbus = the code path the API runs now (BillingGuard.check, BillingService.usage); ledger sum = the query each replaced, same pool, role and tenant transaction',
          `the tenant's ${rowsWanted} ledger rows are spread evenly over the last 30 days; "rows" for the spend check are those of this UTC month`,
        ],
      },
    };
  } finally {
    await app.close();
    await owner.end();
  }
};

export default billingReads;
