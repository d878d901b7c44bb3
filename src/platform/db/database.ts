import type { Pool } from 'pg';
import type { DataSource, EntityManager } from 'typeorm';
import { poolOf, tenantTransaction, type Statement } from './sql';

/**
 * Database access for request handling. Every tenant-owned read or write goes through `tenant()`:
 * a transaction whose `app.tenant_id` is set, so Postgres row-level security confines it to that
 * tenant even if a query forgets its own `tenant_id` filter (the first layer of isolation).
 */
export class Database {
  private rawPool: Pool | null = null;

  constructor(readonly dataSource: DataSource) {}

  /** The node-postgres pool under the DataSource (same role, same connections), for hot-path SQL (sql.ts). */
  get pool(): Pool {
    this.rawPool ??= poolOf(this.dataSource);
    return this.rawPool;
  }

  /**
   * One statement under the tenant's RLS, like `tenant()` with a single query but in a transaction
   * opened with one round trip (sql.ts `tenantTransaction`), not TypeORM's two. A `Statement` is
   * prepared once per connection and its plan reused.
   */
  async tenantQuery<R extends Record<string, any> = any>(tenantId: string, q: Statement | string, params: unknown[]): Promise<R[]> {
    const config = typeof q === 'string' ? { text: q, values: params } : { name: q.name, text: q.text, values: params };
    return tenantTransaction(this.pool, tenantId, async (c) => (await c.query<R>(config)).rows);
  }

  tenant<T>(tenantId: string, fn: (m: EntityManager) => Promise<T>): Promise<T> {
    return this.withSettings({ 'app.tenant_id': tenantId }, fn);
  }

  /** A transaction with arbitrary `app.*` settings (login and key lookup before the tenant is known). */
  async withSettings<T>(settings: Record<string, string>, fn: (m: EntityManager) => Promise<T>): Promise<T> {
    return this.dataSource.transaction(async (m) => {
      const keys = Object.keys(settings);
      if (keys.length) {
        const sql = keys.map((_, i) => `set_config($${2 * i + 1}, $${2 * i + 2}, true)`).join(', ');
        await m.query(`SELECT ${sql}`, keys.flatMap((k) => [k, settings[k]]));
      }
      return fn(m);
    });
  }

  async ping(): Promise<void> {
    await this.dataSource.query('SELECT 1');
  }
}
