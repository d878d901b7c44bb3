import type { Client } from 'pg';
import { hashPassword } from '../../src/modules/tenancy/credentials';
import { createApiKey, signUpTenant, startTestApi, uniqueEmail, type TestApi } from '../support/api';
import { ownerClient } from '../support/db';

const ME = `query Me { me { user { id email } tenant { id name slug status } role } }`;
const LOG_IN = `mutation LogIn($email: String!, $password: String!) { logIn(email: $email, password: $password) { token user { id email } tenant { id name } } }`;
const REVOKE = `mutation RevokeApiKey($id: ID!) { revokeApiKey(id: $id) { id revokedAt } }`;
const KEYS = `query ApiKeys($first: Int, $after: String) { apiKeys(first: $first, after: $after) {
  edges { cursor node { id name prefix scopes lastUsedAt revokedAt } } pageInfo { hasNextPage endCursor } } }`;

let api: TestApi;
let owner: Client;
beforeAll(async () => {
  api = await startTestApi();
  owner = await ownerClient();
});
afterAll(async () => {
  await owner.end();
  await api.close();
});

const code = (res: { errors?: Array<{ extensions?: Record<string, any> }> }) => res.errors?.[0]?.extensions?.code;

describe('sign-up and log-in', () => {
  it('signs up a user who owns a new tenant and can query me with the token', async () => {
    const t = await signUpTenant(api, 'Acme Corp');
    const me = await api.gql(ME, {}, t.token);
    expect(me.errors).toBeUndefined();
    expect(me.data.me).toMatchObject({ user: { id: t.userId, email: t.email }, tenant: { id: t.tenantId, name: 'Acme Corp', status: 'ACTIVE' }, role: 'OWNER' });
    expect(me.data.me.tenant.slug).toMatch(/^acme-corp-[0-9a-f]{8}$/);
  });

  it('logs in with the right password and refuses a wrong one or an unknown e-mail alike', async () => {
    const t = await signUpTenant(api);
    const ok = await api.gql(LOG_IN, { email: t.email.toUpperCase(), password: t.password });
    expect(ok.data.logIn.tenant.id).toBe(t.tenantId);
    expect((await api.gql(ME, {}, ok.data.logIn.token)).data.me.user.id).toBe(t.userId);

    const bad = await api.gql(LOG_IN, { email: t.email, password: 'wrong password!' });
    expect(code(bad)).toBe('UNAUTHENTICATED');
    const unknown = await api.gql(LOG_IN, { email: uniqueEmail(), password: 'whatever12345' });
    expect(code(unknown)).toBe('UNAUTHENTICATED');
    expect(unknown.errors![0].message).toBe(bad.errors![0].message);
  });

  it('refuses a duplicate e-mail with CONFLICT and leaves no second tenant', async () => {
    const t = await signUpTenant(api);
    const before = await owner.query('SELECT count(*)::int AS n FROM tenants');
    const dup = await api.gql(`mutation($input: SignUpInput!) { signUp(input: $input) { token } }`,
      { input: { email: t.email, password: 'another password', tenantName: 'Again' } });
    expect(code(dup)).toBe('CONFLICT');
    const after = await owner.query('SELECT count(*)::int AS n FROM tenants');
    expect(after.rows[0].n).toBe(before.rows[0].n);
  });

  it('names the bad field in BAD_USER_INPUT', async () => {
    const q = `mutation($input: SignUpInput!) { signUp(input: $input) { token } }`;
    const badEmail = await api.gql(q, { input: { email: 'not-an-email', password: 'long enough pw', tenantName: 'X' } });
    expect(code(badEmail)).toBe('BAD_USER_INPUT');
    expect(badEmail.errors![0].extensions!.field).toBe('input.email');
    const shortPw = await api.gql(q, { input: { email: uniqueEmail(), password: 'short', tenantName: 'X' } });
    expect(shortPw.errors![0].extensions!.field).toBe('input.password');
    const emptyName = await api.gql(q, { input: { email: uniqueEmail(), password: 'long enough pw', tenantName: '  ' } });
    expect(emptyName.errors![0].extensions!.field).toBe('input.tenantName');
    const missing = await api.gql(q, { input: { email: uniqueEmail() } });
    expect(code(missing)).toBe('BAD_USER_INPUT');
  });

  it('rejects missing, malformed and expired credentials with UNAUTHENTICATED and no stack trace', async () => {
    expect(code(await api.gql(ME))).toBe('UNAUTHENTICATED');
    const garbage = await api.gql(ME, {}, 'not.a.jwt');
    expect(garbage.status).toBe(401);
    expect(code(garbage)).toBe('UNAUTHENTICATED');
    expect(JSON.stringify(garbage)).not.toMatch(/stacktrace|at .*\.ts:/);
    const jwt = await import('jsonwebtoken');
    const expired = jwt.sign({ sub: 'u', tid: 't', role: 'OWNER', exp: Math.floor(Date.now() / 1000) - 10 }, api.env.JWT_SECRET,
      { algorithm: 'HS256', keyid: api.env.JWT_KEY_ID, issuer: 'nimbus' });
    expect(code(await api.gql(ME, {}, expired))).toBe('UNAUTHENTICATED');
    const otherKid = jwt.sign({ sub: 'u', tid: 't', role: 'OWNER' }, api.env.JWT_SECRET, { algorithm: 'HS256', keyid: 'unknown', issuer: 'nimbus' });
    expect(code(await api.gql(ME, {}, otherKid))).toBe('UNAUTHENTICATED');
  });
});

describe('API keys', () => {
  it('creates a key shown once, authenticates with it, lists it, and refuses it after revocation', async () => {
    const t = await signUpTenant(api);
    const key = await createApiKey(api, t.token, ['READ', 'PREDICT'], 'ci');
    expect(key.secret).toMatch(/^nmb_[A-Za-z0-9]{12}_/);
    const stored = await owner.query('SELECT prefix, secret_hash FROM api_keys WHERE id = $1', [key.id]);
    expect(stored.rows[0].secret_hash).not.toContain(key.secret.slice(`nmb_${stored.rows[0].prefix}_`.length));
    expect(key.secret).toContain(stored.rows[0].prefix);

    const me = await api.gql(ME, {}, key.secret);
    expect(me.data.me).toEqual({ user: null, tenant: expect.objectContaining({ id: t.tenantId }), role: null });

    const list = await api.gql(KEYS, { first: 10 }, t.token);
    expect(list.data.apiKeys.edges.map((e: any) => e.node.id)).toEqual([key.id]);
    expect(list.data.apiKeys.edges[0].node.lastUsedAt).not.toBeNull();

    const revoked = await api.gql(REVOKE, { id: key.id }, t.token);
    expect(revoked.data.revokeApiKey.revokedAt).toBeTruthy();
    expect(code(await api.gql(ME, {}, key.secret))).toBe('UNAUTHENTICATED');
    const audit = await owner.query(`SELECT action FROM audit_events WHERE tenant_id = $1 ORDER BY created_at`, [t.tenantId]);
    expect(audit.rows.map((r) => r.action)).toEqual(['tenant.created', 'api_key.created', 'api_key.revoked']);
  });

  it('a key revoked by another API process is refused within the 2 s cache bound, even in steady use', async () => {
    const t = await signUpTenant(api);
    const key = await createApiKey(api, t.token, ['READ']);
    expect((await api.gql(ME, {}, key.secret)).data.me.tenant.id).toBe(t.tenantId);
    // Another process revokes it: this one is not told, only its cache's bound applies.
    await owner.query('UPDATE api_keys SET revoked_at = now() WHERE id = $1', [key.id]);
    const revokedAt = Date.now();
    let refusedAfter: number | null = null;
    while (Date.now() - revokedAt < 4000) {
      if (code(await api.gql(ME, {}, key.secret)) === 'UNAUTHENTICATED') {
        refusedAfter = Date.now() - revokedAt;
        break;
      }
      await new Promise((r) => setTimeout(r, 100));
    }
    expect(refusedAfter).not.toBeNull();
    expect(refusedAfter!).toBeLessThanOrEqual(3000); // 2 s bound, plus the request in flight on a loaded machine
  });

  it('a request made while the revocation commits cannot re-cache the key: refused once revokeApiKey returns', async () => {
    const t = await signUpTenant(api, 'Revoker');
    const key = await createApiKey(api, t.token, ['READ'], 'to-revoke');
    // Use the key once: last_used_at is now fresh, so later lookups do not touch (and lock) its row.
    expect((await api.gql(ME, {}, key.secret)).data.me.tenant.id).toBe(t.tenantId);

    // Hold the revoke's transaction open between its cache forget and its commit: its audit insert
    // waits on this lock (the api_keys UPDATE has already run, uncommitted).
    const blocker = await ownerClient();
    await blocker.query('BEGIN');
    await blocker.query('LOCK TABLE audit_events IN EXCLUSIVE MODE');
    const revoking = api.gql(REVOKE, { id: key.id }, t.token);
    // Wait until the revoke is waiting on the lock.
    for (let i = 0; i < 100; i++) {
      const w = await owner.query(`SELECT count(*)::int AS n FROM pg_locks WHERE NOT granted AND relation = 'audit_events'::regclass`);
      if (w.rows[0].n > 0) break;
      await new Promise((r) => setTimeout(r, 20));
    }
    // A request with the key in that window: the cache was just emptied, the DB still says "not revoked".
    const during = await api.gql(ME, {}, key.secret);
    expect(during.data?.me?.tenant?.id).toBe(t.tenantId);
    await blocker.query('COMMIT');
    await blocker.end();
    const revoked = await revoking;
    expect(revoked.data.revokeApiKey.revokedAt).toBeTruthy();

    // A revocation applies in this process at once (README), even to a key looked up during its commit.
    const after = await api.gql(ME, {}, key.secret);
    expect(code(after)).toBe('UNAUTHENTICATED');
  });

  it('an API key creates keys only with scopes it has itself', async () => {
    const t = await signUpTenant(api);
    const admin = await createApiKey(api, t.token, ['ADMIN', 'READ']);
    const mint = (scopes: string) => api.gql(`mutation { createApiKey(input: { name: "minted", scopes: [${scopes}] }) { secret apiKey { scopes } } }`, {}, admin.secret);
    expect((await mint('READ')).data.createApiKey.apiKey.scopes).toEqual(['READ']);
    const stronger = await mint('READ, BILLING');
    expect(stronger.errors?.[0]?.extensions).toMatchObject({ code: 'FORBIDDEN', field: 'input.scopes' });
    // A user (OWNER) still creates any.
    expect((await api.gql(`mutation { createApiKey(input: { name: "b", scopes: [BILLING, PREDICT] }) { secret } }`, {}, t.token)).errors).toBeUndefined();
  });

  it('rejects a key with a wrong secret for a real prefix', async () => {
    const t = await signUpTenant(api);
    const key = await createApiKey(api, t.token, ['READ']);
    const forged = key.secret.slice(0, -4) + 'AAAA';
    expect(code(await api.gql(ME, {}, forged))).toBe('UNAUTHENTICATED');
  });

  it('enforces scopes: a READ key cannot create keys, a PREDICT key cannot read', async () => {
    const t = await signUpTenant(api);
    const read = await createApiKey(api, t.token, ['READ']);
    const res = await api.gql(`mutation { createApiKey(input: { name: "x", scopes: [ADMIN] }) { secret } }`, {}, read.secret);
    expect(code(res)).toBe('FORBIDDEN');
    const predict = await createApiKey(api, t.token, ['PREDICT']);
    expect(code(await api.gql(ME, {}, predict.secret))).toBe('FORBIDDEN');
  });

  it('pages through keys with cursors', async () => {
    const t = await signUpTenant(api);
    const ids = [];
    for (let i = 0; i < 5; i++) ids.push((await createApiKey(api, t.token, ['READ'], `k${i}`)).id);
    const p1 = await api.gql(KEYS, { first: 2 }, t.token);
    expect(p1.data.apiKeys.pageInfo.hasNextPage).toBe(true);
    const p2 = await api.gql(KEYS, { first: 2, after: p1.data.apiKeys.pageInfo.endCursor }, t.token);
    const p3 = await api.gql(KEYS, { first: 2, after: p2.data.apiKeys.pageInfo.endCursor }, t.token);
    expect(p3.data.apiKeys.pageInfo.hasNextPage).toBe(false);
    const seen = [p1, p2, p3].flatMap((p) => p.data.apiKeys.edges.map((e: any) => e.node.id));
    expect(seen).toEqual([...ids].reverse());
    expect(code(await api.gql(KEYS, { first: 0 }, t.token))).toBe('BAD_USER_INPUT');
    expect(code(await api.gql(KEYS, { first: 2, after: 'garbage' }, t.token))).toBe('BAD_USER_INPUT');
  });
});

describe('roles', () => {
  it('a MEMBER may read but not manage keys', async () => {
    const t = await signUpTenant(api);
    const email = uniqueEmail('member');
    const u = await owner.query(`INSERT INTO users (email, password_hash) VALUES ($1, $2) RETURNING id`, [email, await hashPassword('member password')]);
    await owner.query(`INSERT INTO memberships (tenant_id, user_id, role) VALUES ($1, $2, 'MEMBER')`, [t.tenantId, u.rows[0].id]);
    const login = await api.gql(LOG_IN, { email, password: 'member password' });
    const token = login.data.logIn.token;
    expect((await api.gql(ME, {}, token)).data.me.role).toBe('MEMBER');
    expect(code(await api.gql(`mutation { createApiKey(input: { name: "x", scopes: [READ] }) { secret } }`, {}, token))).toBe('FORBIDDEN');
    expect(code(await api.gql(KEYS, {}, token))).toBe('FORBIDDEN');
  });
});
