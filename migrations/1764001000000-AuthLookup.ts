import type { MigrationInterface, QueryRunner } from 'typeorm';

/**
 * The per-request reads of authentication and admission in one round trip each. Like
 * `nimbus_insert_jobs`, each function sets the RLS setting for its own (autocommit) transaction
 * and reads under the table's policies with the caller's rights (SECURITY INVOKER), so a lookup
 * is one statement instead of BEGIN / set_config / SELECT / COMMIT:
 * - `nimbus_api_key(prefix)`: the API key with that prefix (api_keys lets a key be read by its
 *   prefix once `app.api_key_prefix` names it, before the tenant is known);
 * - `nimbus_tenant(id)`: the tenant row, for its plan, status and billing state.
 */
export class AuthLookup1764001000000 implements MigrationInterface {
  name = 'AuthLookup1764001000000';

  async up(q: QueryRunner): Promise<void> {
    await q.query(`
      CREATE FUNCTION nimbus_api_key(p_prefix text) RETURNS SETOF api_keys LANGUAGE plpgsql AS $$
      BEGIN
        PERFORM set_config('app.api_key_prefix', p_prefix, true);
        RETURN QUERY SELECT * FROM api_keys WHERE prefix = p_prefix;
      END $$;
    `);
    await q.query(`
      CREATE FUNCTION nimbus_tenant(p_tenant uuid) RETURNS SETOF tenants LANGUAGE plpgsql AS $$
      BEGIN
        PERFORM set_config('app.tenant_id', p_tenant::text, true);
        RETURN QUERY SELECT * FROM tenants WHERE id = p_tenant;
      END $$;
    `);
  }

  async down(q: QueryRunner): Promise<void> {
    await q.query(`DROP FUNCTION nimbus_tenant`);
    await q.query(`DROP FUNCTION nimbus_api_key`);
  }
}
