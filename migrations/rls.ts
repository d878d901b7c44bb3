import type { QueryRunner } from 'typeorm';

/**
 * Row-level security for a tenant-owned table: rows are visible and writable only when their
 * tenant_id equals the transaction's `app.tenant_id` (set by Database.tenant()). Table owners and
 * superusers bypass RLS, which is why the API connects as a separate non-owner role.
 * `extraRead` widens what may be read (never what may be written).
 */
export async function enableTenantRls(q: QueryRunner, table: string, extraRead = ''): Promise<void> {
  const own = `tenant_id = nullif(current_setting('app.tenant_id', true), '')::uuid`;
  await q.query(`ALTER TABLE ${table} ENABLE ROW LEVEL SECURITY`);
  await q.query(`CREATE POLICY ${table}_tenant_read ON ${table} FOR SELECT USING (${own} ${extraRead})`);
  await q.query(`CREATE POLICY ${table}_tenant_insert ON ${table} FOR INSERT WITH CHECK (${own})`);
  await q.query(`CREATE POLICY ${table}_tenant_update ON ${table} FOR UPDATE USING (${own} ${extraRead}) WITH CHECK (${own})`);
  await q.query(`CREATE POLICY ${table}_tenant_delete ON ${table} FOR DELETE USING (${own})`);
}
