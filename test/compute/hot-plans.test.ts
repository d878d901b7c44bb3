import { randomUUID } from 'node:crypto';
import type { Pool } from 'pg';
// eslint-disable-next-line @typescript-eslint/no-require-imports
const { prepareValue } = require('pg/lib/utils') as { prepareValue(v: unknown): unknown };
import { hotPool } from '../../src/modules/compute/control-plane/context';
import { ENDED, PROGRESS, STARTED } from '../../src/modules/compute/control-plane/recorder';
import { ADMIT } from '../../src/modules/compute/control-plane/scheduler';
import { run, type Statement } from '../../src/platform/db/sql';
import { testEnv } from '../support/env';

/**
 * The control plane's hot statements are prepared once per connection and keep the generic plan
 * made at that moment. This file's database is a fresh copy of the template: its tables are empty,
 * the case (a new deployment) in which a planner trusting its statistics picks sequential scans,
 * and then keeps scanning a table that grows to millions of rows. The plans must find rows by key.
 */
describe('hot-path plans', () => {
  const pools: Pool[] = [];
  afterAll(async () => {
    await Promise.all(pools.map((p) => p.end()));
  });

  const id = randomUUID();
  const cases: Array<[Statement, unknown[], 'relaxed' | 'durable']> = [
    [ADMIT, [[id], ['node-a'], [false]], 'relaxed'],
    [STARTED, [[id], [1], [Date.now()], ['node-a']], 'relaxed'],
    [PROGRESS, [id, 1, 0.5, ['line']], 'relaxed'],
    [ENDED, [[id], [1], ['SUCCEEDED'], ['null'], [null], [Date.now() - 5], [Date.now()], ['{}'], [1], ['node-a'], [5], 3600], 'durable'],
  ];

  it.each(cases.map(([st, params, kind]) => [st.name, st, params, kind] as const))(
    '%s uses indexes even when planned on empty tables', async (_name, st, params, kind) => {
      const env = await testEnv();
      const pool = hotPool(env.DATABASE_URL, kind, { warn: () => undefined });
      pools.push(pool);
      const client = await pool.connect();
      try {
        const { rows: [{ n }] } = await client.query<{ n: string }>('SELECT count(*) AS n FROM jobs');
        expect(Number(n)).toBe(0);
        // Prepares the statement on this connection: its generic plan is made now, on empty tables.
        expect(await run(client, st, params)).toEqual([]);
        // EXECUTE takes its arguments as SQL: the same values, as literals (node-postgres' own text forms).
        const literals = params.map((v) => (v === null ? 'NULL' : client.escapeLiteral(String(prepareValue(v))))).join(', ');
        const plan = (await client.query(`EXPLAIN EXECUTE "${st.name}"(${literals})`)).rows.map((r) => r['QUERY PLAN']).join('\n');
        expect(plan).toMatch(/Index Scan using jobs_pkey/);
        expect(plan).not.toMatch(/Seq Scan on (jobs|usage_ledger)/);
      } finally {
        client.release();
      }
    });
});
