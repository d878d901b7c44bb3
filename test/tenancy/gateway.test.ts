import { ConfigError, loadEnv } from '../../src/config/env';
import { signUpTenant, startTestApi, type TestApi } from '../support/api';
import { ownerClient } from '../support/db';

const ME = `query Me { me { tenant { id } } }`;

let api: TestApi;
beforeAll(async () => {
  api = await startTestApi({ QUERY_COST_LIMIT: '60', QUERY_DEPTH_LIMIT: '6' });
});
afterAll(() => api.close());

describe('query cost and depth', () => {
  it('reports extensions.cost on every response', async () => {
    const t = await signUpTenant(api);
    const res = await api.gql(ME, {}, t.token);
    expect(res.extensions!.cost).toEqual({ requested: 3, limit: 60 });
  });

  it('refuses a query over the cost limit with QUERY_TOO_COSTLY before running it', async () => {
    const t = await signUpTenant(api);
    const q = `query { apiKeys(first: 20) { edges { cursor node { id name prefix scopes } } } }`;
    const res = await api.gql(q, {}, t.token);
    expect(res.errors![0].extensions!.code).toBe('QUERY_TOO_COSTLY');
    expect(res.extensions!.cost.requested).toBeGreaterThan(60);
    expect(res.data).toBeUndefined();
    const cheap = await api.gql(`query { apiKeys(first: 2) { edges { node { id } } } }`, {}, t.token);
    expect(cheap.errors).toBeUndefined();
  });

  it('refuses a query deeper than the depth limit', async () => {
    const shallow = await startTestApi({ QUERY_DEPTH_LIMIT: '2' });
    try {
      const t = await signUpTenant(shallow);
      const deep = await shallow.gql(`query { apiKeys(first: 1) { edges { node { id } } } }`, {}, t.token);
      expect(deep.errors![0].extensions!.code).toBe('QUERY_TOO_COSTLY');
      expect(deep.errors![0].message).toMatch(/depth/);
      expect((await shallow.gql(`query { me { tenant { id } } }`, {}, t.token)).errors).toBeUndefined();
    } finally {
      await shallow.close();
    }
  });

  it('answers a syntax error with BAD_USER_INPUT', async () => {
    const res = await api.gql(`query { me { `);
    expect(res.errors![0].extensions!.code).toBe('BAD_USER_INPUT');
  });

  it('refuses a GET mutation-less simple request without a preflight header (CSRF prevention)', async () => {
    const res = await fetch(`${api.server.url}?query=${encodeURIComponent('{ __typename }')}`);
    expect(res.status).toBe(400);
  });
});

describe('rate limits', () => {
  it('throttles a tenant on the FREE plan with RATE_LIMITED and retryAfterSeconds', async () => {
    const t = await signUpTenant(api);
    const owner = await ownerClient();
    await owner.query(`UPDATE tenants SET plan = 'FREE' WHERE id = $1`, [t.tenantId]);
    await owner.end();
    api.app.services.tenancy.forgetTenantProfile(t.tenantId);
    const results = await Promise.all(Array.from({ length: 16 }, () => api.gql(ME, {}, t.token)));
    const limited = results.filter((r) => r.errors?.[0]?.extensions?.code === 'RATE_LIMITED');
    expect(limited.length).toBeGreaterThanOrEqual(5);
    expect(limited.length).toBeLessThanOrEqual(7);
    expect(limited[0].status).toBe(429);
    expect(limited[0].errors![0].extensions!.retryAfterSeconds).toBeGreaterThanOrEqual(1);
    // Another tenant is unaffected.
    const other = await signUpTenant(api);
    expect((await api.gql(ME, {}, other.token)).errors).toBeUndefined();
  });
});

describe('request hygiene', () => {
  const post = (body: string) => fetch(api.server.url, { method: 'POST', headers: { 'content-type': 'application/json' }, body });
  const noStack = /node_modules|\/work\/|at \w+ \(/;

  it('answers a body that is not JSON with a GraphQL error (BAD_USER_INPUT), never an HTML page with a stack trace', async () => {
    const res = await post('{"query": ');
    const text = await res.text();
    expect(res.status).toBe(400);
    expect(text).not.toMatch(noStack);
    expect(JSON.parse(text).errors[0]).toMatchObject({ message: 'The request body is not valid JSON', extensions: { code: 'BAD_USER_INPUT' } });
  });

  it('answers a body over the 12 MB limit with 413 and a GraphQL error', async () => {
    const res = await post(JSON.stringify({ query: '{ __typename }', variables: { x: 'a'.repeat(13 * 1024 * 1024) } }));
    const text = await res.text();
    expect(res.status).toBe(413);
    expect(text).not.toMatch(noStack);
    expect(JSON.parse(text).errors[0].extensions.code).toBe('BAD_USER_INPUT');
  }, 30_000);

  const aliases = (n: number) => `{ ${Array.from({ length: n }, (_, i) => `a${i}:__typename`).join(' ')} }`;
  it('stops parsing a document past the token limit (QUERY_TOO_COSTLY), before validation walks it: 120,000 aliases, or 550,000 that crashed the depth rule', async () => {
    for (const n of [120_000, 550_000]) {
      const res = await post(JSON.stringify({ query: aliases(n) }));
      const body = await res.json() as { errors: Array<{ message: string; extensions: { code: string } }> };
      expect(res.status).toBe(400);
      expect(body.errors[0].extensions.code).toBe('QUERY_TOO_COSTLY');
      expect(body.errors[0].message).toMatch(/more tha[nt] 5000 tokens/); // (graphql-js writes "that")
    }
    // Every operation of the contract stays far below it.
    expect((await api.gql('{ __typename }')).errors).toBeUndefined();
  }, 60_000);
});

describe('health and metrics', () => {
  const base = () => api.server.url.replace('/graphql', '');
  it('serves /healthz, /readyz and Prometheus metrics by operation name', async () => {
    expect((await fetch(`${base()}/healthz`)).status).toBe(200);
    const ready = await fetch(`${base()}/readyz`);
    expect(await ready.json()).toEqual({ status: 'ok', postgres: 'ok', redis: 'ok' });
    await api.gql(ME);
    const metrics = await (await fetch(`${base()}/metrics`)).text();
    expect(metrics).toMatch(/nimbus_graphql_request_duration_seconds_count\{operation="Me"\} \d+/);
  });

  it('with METRICS_TOKEN, answers /metrics only to its bearer (the labels carry tenant ids)', async () => {
    const token = 'metrics-token-0123456789';
    const guarded = await startTestApi({ METRICS_TOKEN: token });
    try {
      const at = `${guarded.server.url.replace('/graphql', '')}/metrics`;
      expect((await fetch(at)).status).toBe(401);
      expect((await fetch(at, { headers: { authorization: 'Bearer not-the-token-000000' } })).status).toBe(401);
      const ok = await fetch(at, { headers: { authorization: `Bearer ${token}` } });
      expect(ok.status).toBe(200);
      expect(await ok.text()).toMatch(/nimbus_graphql_requests_total/);
    } finally {
      await guarded.close();
    }
  });
});

describe('configuration', () => {
  it('names every bad or missing variable', () => {
    let err: unknown;
    try {
      loadEnv({ NODE_ENV: 'production', PORT: 'abc', DATABASE_URL: 'nope', JWT_PREVIOUS_KEYS: 'k0' });
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(ConfigError);
    const msg = (err as Error).message;
    expect(msg).toMatch(/PORT:/);
    expect(msg).toMatch(/DATABASE_URL:/);
    expect(msg).toMatch(/JWT_SECRET: the development default is refused/);
    expect(msg).toMatch(/JWT_PREVIOUS_KEYS:/);
    expect(msg).toMatch(/METRICS_TOKEN: required when NODE_ENV=production/);
    expect(() => loadEnv({ NODE_ENV: 'staging' })).toThrow(/NODE_ENV/);
  });

  it('has defaults that work on a developer machine', () => {
    const env = loadEnv({});
    expect(env).toMatchObject({ PORT: 4000, DATABASE_URL: 'postgres://postgres@127.0.0.1:5432/nimbus', REDIS_URL: 'redis://127.0.0.1:6379' });
  });
});
