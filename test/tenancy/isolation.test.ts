import type { Client } from 'pg';
import { createApiKey, signUpTenant, startTestApi, type TestApi, type TestTenant } from '../support/api';
import { appRoleClient, ownerClient } from '../support/db';

const REVOKE = `mutation RevokeApiKey($id: ID!) { revokeApiKey(id: $id) { id revokedAt } }`;
const KEYS = `query { apiKeys(first: 50) { edges { node { id } } } }`;

let api: TestApi;
let a: TestTenant;
let b: TestTenant;
let bKey: { id: string; secret: string };
beforeAll(async () => {
  api = await startTestApi();
  a = await signUpTenant(api, 'Tenant A');
  b = await signUpTenant(api, 'Tenant B');
  await createApiKey(api, a.token, ['READ'], 'a-key');
  bKey = await createApiKey(api, b.token, ['READ', 'ADMIN'], 'b-key');
});
afterAll(() => api.close());

describe('tenant isolation through GraphQL', () => {
  it('answers NOT_FOUND for another tenant\'s key id, exactly as for a missing id, and changes nothing', async () => {
    const cross = await api.gql(REVOKE, { id: bKey.id }, a.token);
    const missing = await api.gql(REVOKE, { id: '00000000-0000-4000-8000-000000000000' }, a.token);
    expect(cross.errors![0].extensions!.code).toBe('NOT_FOUND');
    expect(cross.errors![0].message).toBe(missing.errors![0].message);
    expect((await api.gql(`query { me { tenant { id } } }`, {}, bKey.secret)).data.me.tenant.id).toBe(b.tenantId);
  });

  it('lists only the caller\'s own keys', async () => {
    const aKeys = (await api.gql(KEYS, {}, a.token)).data.apiKeys.edges.map((e: any) => e.node.id);
    expect(aKeys).toHaveLength(1);
    expect(aKeys).not.toContain(bKey.id);
  });

  it('an API key of tenant B acts only in tenant B', async () => {
    const res = await api.gql(REVOKE, { id: (await createApiKey(api, a.token, ['READ'])).id }, bKey.secret);
    expect(res.errors![0].extensions!.code).toBe('NOT_FOUND');
  });
});

describe('row-level security (second layer)', () => {
  let app: Client;
  let owner: Client;
  beforeAll(async () => {
    app = await appRoleClient();
    owner = await ownerClient();
  });
  afterAll(async () => {
    await app.end();
    await owner.end();
  });

  it('the API role is neither superuser nor table owner, so RLS applies to it', async () => {
    const role = await owner.query(`SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = 'nimbus_app'`);
    expect(role.rows[0]).toEqual({ rolsuper: false, rolbypassrls: false });
    const owners = await owner.query(`SELECT DISTINCT tableowner FROM pg_tables WHERE schemaname = 'public'`);
    expect(owners.rows.map((r) => r.tableowner)).not.toContain('nimbus_app');
  });

  it('a raw query under tenant A\'s setting cannot see or write tenant B\'s rows, even when it asks for them', async () => {
    await app.query('BEGIN');
    try {
      await app.query(`SELECT set_config('app.tenant_id', $1, true)`, [a.tenantId]);
      const all = await app.query('SELECT tenant_id FROM api_keys');
      expect(all.rows.length).toBeGreaterThan(0);
      expect(new Set(all.rows.map((r) => r.tenant_id))).toEqual(new Set([a.tenantId]));
      expect((await app.query('SELECT * FROM api_keys WHERE tenant_id = $1', [b.tenantId])).rowCount).toBe(0);
      expect((await app.query('SELECT * FROM tenants WHERE id = $1', [b.tenantId])).rowCount).toBe(0);
      expect((await app.query('SELECT * FROM memberships WHERE tenant_id = $1', [b.tenantId])).rowCount).toBe(0);
      expect((await app.query('SELECT * FROM audit_events WHERE tenant_id = $1', [b.tenantId])).rowCount).toBe(0);
      const upd = await app.query(`UPDATE api_keys SET name = 'pwned' WHERE tenant_id = $1`, [b.tenantId]);
      expect(upd.rowCount).toBe(0);
      await app.query('SAVEPOINT s');
      await expect(app.query(
        `INSERT INTO audit_events (tenant_id, actor_type, action, object_type, object_id) VALUES ($1, 'SYSTEM', 'x', 'x', 'x')`, [b.tenantId],
      )).rejects.toThrow(/row-level security/);
      await app.query('ROLLBACK TO SAVEPOINT s');
    } finally {
      await app.query('ROLLBACK');
    }
    const name = await owner.query('SELECT name FROM api_keys WHERE id = $1', [bKey.id]);
    expect(name.rows[0].name).toBe('b-key');
  });

  it('without a tenant setting the API role sees no tenant-owned rows at all', async () => {
    for (const table of ['tenants', 'memberships', 'api_keys', 'audit_events']) {
      expect((await app.query(`SELECT 1 FROM ${table}`)).rowCount).toBe(0);
    }
  });
});
