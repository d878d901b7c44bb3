import { randomUUID } from 'node:crypto';
import type { Client, PoolClient } from 'pg';
// eslint-disable-next-line @typescript-eslint/no-require-imports
const { prepareValue } = require('pg/lib/utils') as { prepareValue(v: unknown): unknown };
import { HotPool } from '../../src/modules/compute/control-plane/context';
import { ENDED, PROGRESS, STARTED } from '../../src/modules/compute/control-plane/recorder';
import { ADMIT } from '../../src/modules/compute/control-plane/scheduler';
import type { Statement } from '../../src/platform/db/sql';
import { ownerClient } from '../support/db';
import { testEnv } from '../support/env';

interface PlanNode { 'Node Type': string; 'Relation Name'?: string; 'Index Name'?: string; 'Index Cond'?: string; Plans?: PlanNode[] }

/** Every read of jobs / usage_ledger in a plan, as "how it is read" (keyed reads name the key). */
function tableReads(node: PlanNode, out: string[] = []): string[] {
  const table = node['Relation Name'];
  const type = node['Node Type'];
  if (table === 'jobs' || table === 'usage_ledger') {
    if (type === 'Index Scan' || type === 'Index Only Scan') out.push(`${table}: ${node['Index Cond'] ? `by ${node['Index Name']}` : `whole ${node['Index Name']}`}`);
    else if (type === 'Bitmap Heap Scan') {
      const idx = node.Plans?.find((p) => p['Node Type'] === 'Bitmap Index Scan');
      out.push(`${table}: by ${idx?.['Index Name']}`);
    } else if (type !== 'ModifyTable') out.push(`${table}: ${type}`);
  }
  for (const child of node.Plans ?? []) tableReads(child, out);
  return out;
}

const KEYED = /^(jobs: by jobs_pkey|usage_ledger: by usage_ledger_job_id_attempt_key)$/;

/**
 * The control plane's hot statements are prepared once per connection and keep the generic plan
 * made at that moment. This file's database is a fresh copy of the template, analyzed while empty:
 * the case (a new deployment) in which the cheapest plan walks the whole table or a whole index,
 * which costs nothing at first and more with every row. HotPool must make them again once the
 * tables have grown, and the plans made then must find rows by key.
 */
describe('hot-path plans', () => {
  const id = randomUUID();
  const cases: Array<[Statement, unknown[], 'relaxed' | 'durable']> = [
    [ADMIT, [[id], ['node-a'], [false]], 'relaxed'],
    [STARTED, [[id], [1], [Date.now()], ['node-a']], 'relaxed'],
    [PROGRESS, [id, 1, 0.5, ['line']], 'relaxed'],
    [ENDED, [[id], [1], ['SUCCEEDED'], ['null'], [null], [Date.now() - 5], [Date.now()], ['{}'], [1], ['node-a'], [5], 3600], 'durable'],
  ];
  const pools = new Map<'relaxed' | 'durable', HotPool>();
  let owner: Client;
  const generationsAtEmpty = new Map<string, string>();

  async function explain(c: PoolClient, name: string, params: unknown[]): Promise<string[]> {
    // EXECUTE takes its arguments as SQL: the same values, as literals (node-postgres' own text forms).
    const literals = params.map((v) => (v === null ? 'NULL' : c.escapeLiteral(String(prepareValue(v))))).join(', ');
    const { rows } = await c.query(`EXPLAIN (FORMAT JSON) EXECUTE "${name}"(${literals})`);
    return tableReads((rows[0]['QUERY PLAN'] as Array<{ Plan: PlanNode }>)[0].Plan);
  }

  beforeAll(async () => {
    const env = await testEnv();
    owner = await ownerClient();
    await owner.query('VACUUM ANALYZE jobs, usage_ledger');
    for (const kind of ['relaxed', 'durable'] as const) {
      pools.set(kind, new HotPool(env.DATABASE_URL, kind, { warn: () => undefined }, { checkEveryMs: 0, minGrowthPages: 8, connections: 1 }));
    }
    // Every statement runs once on the empty tables, so its first plan is made there.
    for (const [st, params, kind] of cases) {
      const hot = pools.get(kind)!;
      await hot.checkGrowth();
      expect(await hot.run(st, params)).toEqual([]);
      generationsAtEmpty.set(st.name, hot.nameOf(st));
    }
    // The tables grow (a deployment's first few thousand jobs), with no new statistics.
    const tenant = randomUUID();
    await owner.query(`INSERT INTO tenants (id, name, slug, webhook_secret) VALUES ($1, 'plans', $2, 's')`, [tenant, `plans-${tenant}`]);
    await owner.query(`
      WITH j AS (
        INSERT INTO jobs (tenant_id, kind, service, status, hardware, devices, attempt, input, output, started_at, completed_at)
        SELECT $1, 'PREDICTION', 'system.echo', 'SUCCEEDED', 'CPU', 1, 1, '{"message":"m","sleepMs":0}', '{"message":"m"}', now(), now()
          FROM generate_series(1, 3000)
        RETURNING id
      )
      INSERT INTO usage_ledger (tenant_id, job_id, attempt, job_kind, service, hardware, devices, started_at, ended_at, billable_ms, billable)
      SELECT $1, id, 1, 'PREDICTION', 'system.echo', 'CPU', 1, now(), now(), 1, true FROM j`, [tenant]);
  });

  afterAll(async () => {
    await owner?.end();
    await Promise.all([...pools.values()].map((p) => p.end()));
  });

  it('keeps its plans while the tables have not grown', async () => {
    const hot = pools.get('relaxed')!;
    const before = hot.nameOf(ADMIT);
    await hot.checkGrowth(); // grown since the statements were first planned (beforeAll)
    const after = hot.nameOf(ADMIT);
    expect(after).not.toBe(before);
    await hot.checkGrowth(); // not grown since
    expect(hot.nameOf(ADMIT)).toBe(after);
  });

  it.each(cases.map(([st, params, kind]) => [st.name, st, params, kind] as const))(
    '%s is planned again once the tables have grown, and then reads them by key', async (_name, st, params, kind) => {
      const hot = pools.get(kind)!;
      await hot.checkGrowth();
      const name = hot.nameOf(st);
      expect(name).not.toBe(generationsAtEmpty.get(st.name));
      const seen: string[] = [];
      const query = hot.pool.query.bind(hot.pool) as (...args: any[]) => Promise<unknown>;
      (hot.pool as unknown as { query: (...args: any[]) => Promise<unknown> }).query = (config: { name?: string }, ...rest: unknown[]) => {
        seen.push(config.name ?? '');
        return query(config, ...rest);
      };
      try {
        expect(await hot.run(st, params)).toEqual([]);
      } finally {
        (hot.pool as unknown as { query: unknown }).query = query;
      }
      expect(seen).toContain(name);
      // One connection, so this reads the plan that run() used.
      const client = await hot.pool.connect();
      try {
        const reads = await explain(client, name, params);
        expect(reads.length).toBeGreaterThan(0);
        for (const r of reads) expect(r).toMatch(KEYED);
      } finally {
        client.release();
      }
    });
});
