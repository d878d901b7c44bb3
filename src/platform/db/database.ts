import type { DataSource, EntityManager } from 'typeorm';

/**
 * Database access for request handling. Every tenant-owned read or write goes through `tenant()`:
 * a transaction whose `app.tenant_id` is set, so Postgres row-level security confines it to that
 * tenant even if a query forgets its own `tenant_id` filter (the first layer of isolation).
 */
export class Database {
  constructor(readonly dataSource: DataSource) {}

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
