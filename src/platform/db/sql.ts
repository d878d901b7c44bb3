import type { Pool, PoolClient, QueryResultRow } from 'pg';
import type { DataSource } from 'typeorm';
import { isUuid } from '../uuid';

/**
 * Hot-path SQL straight on node-postgres, beside TypeORM (which everything else uses).
 *
 * Why: the job path runs a few statements per job thousands of times a second. Through TypeORM's
 * QueryRunner each pays a pool checkout per query, and each unnamed statement is parsed and planned
 * again by Postgres on every call (for the recorder's end-of-attempt statement that was ~1 ms of
 * its ~1.7 ms). Here the statements are named (`Statement`): node-postgres prepares each once per
 * connection, and Postgres then reuses its plan. A tenant transaction opens with one round trip
 * (`BEGIN` and the RLS setting in one simple query) instead of two.
 *
 * `poolOf` runs statements on a DataSource's own pool (same role, same RLS, no extra connections);
 * the control plane also gives them small pools of their own (control-plane.ts).
 */

/** A named statement: prepared once per connection, its plan reused. Names must be unique per text. */
export interface Statement {
  readonly name: string;
  readonly text: string;
}

const registered = new Map<string, string>();

export function statement(name: string, text: string): Statement {
  const prev = registered.get(name);
  if (prev !== undefined && prev !== text) throw new Error(`statement ${name} is defined twice with different SQL`);
  registered.set(name, text);
  return { name, text };
}

/** Something statements can run on: a pool (one statement, autocommit) or a client in a transaction. */
export interface Runner {
  query<R extends QueryResultRow = any>(config: { name?: string; text: string; values?: unknown[] }): Promise<{ rows: R[]; rowCount: number | null }>;
}

export function run<R extends QueryResultRow = any>(on: Runner, st: Statement, values: unknown[]): Promise<R[]> {
  return on.query<R>({ name: st.name, text: st.text, values }).then((r) => r.rows);
}

/** The node-postgres pool under a TypeORM DataSource (initialised). */
export function poolOf(ds: DataSource): Pool {
  const pool = (ds.driver as unknown as { master?: Pool }).master;
  if (!pool) throw new Error('DataSource is not initialised');
  return pool;
}

/**
 * A transaction confined to one tenant by RLS (`app.tenant_id`, transaction-local), like
 * `Database.tenant` but on a raw client. The tenant id is inlined into the opening simple query,
 * so it is checked to be a UUID first (it always is: it comes from an authenticated principal).
 */
export async function tenantTransaction<T>(pool: Pool, tenantId: string, fn: (c: PoolClient) => Promise<T>): Promise<T> {
  if (!isUuid(tenantId)) throw new Error('tenant id is not a UUID');
  const client = await pool.connect();
  let broken: Error | undefined;
  try {
    await client.query(`BEGIN; SELECT set_config('app.tenant_id', '${tenantId.toLowerCase()}', true)`);
    const out = await fn(client);
    await client.query('COMMIT');
    return out;
  } catch (err) {
    await client.query('ROLLBACK').catch((e: Error) => (broken = e));
    throw err;
  } finally {
    // A connection whose ROLLBACK failed is in an unknown state: destroy it rather than reuse it.
    client.release(broken);
  }
}
