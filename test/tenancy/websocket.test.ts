import { createClient, type Client as WsClient } from 'graphql-ws';
import WebSocket from 'ws';
import type { Client } from 'pg';
import { createApiKey, signUpTenant, startTestApi, type TestApi, type TestTenant } from '../support/api';
import { ownerClient } from '../support/db';
import { PREDICT } from '../support/gql';

/**
 * Operations over the WebSocket pass the same gates as over HTTP: rate limits, depth and cost
 * limits, typed errors for bad documents, a credential checked per operation, and a cap on the
 * subscriptions a tenant holds open.
 */

let api: TestApi;
let owner: Client;
const clients: WsClient[] = [];
beforeAll(async () => {
  // Small limits, so a test can reach them: depth 3, cost 30; credentials re-checked every 200 ms.
  api = await startTestApi({ QUERY_DEPTH_LIMIT: '3', QUERY_COST_LIMIT: '30', WS_CREDENTIAL_RECHECK_MS: '200' });
  owner = await ownerClient();
});
afterAll(async () => {
  await Promise.all(clients.map((c) => c.dispose()));
  await owner.end();
  await api.close();
});

const wsUrl = () => api.server.url.replace(/^http/, 'ws');
function connect(token: string): WsClient {
  const c = createClient({ url: wsUrl(), webSocketImpl: WebSocket, connectionParams: { authorization: `Bearer ${token}` }, retryAttempts: 0, lazy: false,
    onNonLazyError: () => undefined }); // the tests read closes from their operations
  clients.push(c);
  return c;
}

type Outcome = { data?: any; errors?: Array<{ message: string; extensions?: Record<string, any> }> };
/**
 * Runs one operation to its first result or error (its errors normalised to the HTTP shape). A
 * subscription is then completed; a query or mutation completes by itself (completing it from its
 * result as well makes graphql-ws's client count the operation twice and close a busy socket).
 */
function once(c: WsClient, query: string, variables: Record<string, unknown> = {}): Promise<Outcome> {
  const subscription = /^\s*subscription\b/.test(query);
  return new Promise((resolve) => {
    let done = false;
    const finish = (o: Outcome) => {
      if (done) return;
      done = true;
      if (subscription) stop();
      resolve(o);
    };
    const stop = c.subscribe({ query, variables }, {
      next: (v) => finish(v as Outcome),
      error: (e) => finish({ errors: Array.isArray(e) ? e : [{ message: String((e as Error)?.message ?? (e as { reason?: string })?.reason ?? e), extensions: { closeCode: (e as { code?: number })?.code } }] }),
      complete: () => finish({}),
    });
  });
}
const code = (o: Outcome) => o.errors?.[0]?.extensions?.code;

/** A tenant on the FREE plan: a burst of 10 requests, 2 per second, 5 open subscriptions. */
async function freeTenant(name: string): Promise<TestTenant> {
  const t = await signUpTenant(api, name);
  await owner.query(`UPDATE tenants SET plan = 'FREE' WHERE id = $1`, [t.tenantId]);
  api.app.services.tenancy.forgetTenantProfile(t.tenantId);
  return t;
}

describe('GraphQL over WebSocket', () => {
  it('draws on the same rate limit as HTTP: a FREE tenant\'s burst is spent across both', async () => {
    const t = await freeTenant('Ws Flood');
    const c = connect(t.token);
    const results: Outcome[] = [];
    for (let i = 0; i < 8; i++) results.push(await once(c, '{ me { tenant { id } } }'));
    expect(results.every((r) => r.data?.me?.tenant?.id === t.tenantId)).toBe(true);
    // Two more over HTTP use up the burst of 10; the next WebSocket operation is refused.
    for (let i = 0; i < 2; i++) expect((await api.gql('{ me { tenant { id } } }', {}, t.token)).errors).toBeUndefined();
    const refused = await once(c, '{ me { tenant { id } } }');
    expect(code(refused)).toBe('RATE_LIMITED');
    expect(refused.errors![0].extensions!.retryAfterSeconds).toBeGreaterThan(0);
    // Mutations too: a predict over the socket is refused, and no job was created.
    const predict = await once(c, PREDICT, { input: { service: 'system.echo', input: { message: 'flood' }, wait: 0 } });
    expect(code(predict)).toBe('RATE_LIMITED');
    expect((await owner.query('SELECT count(*)::int AS n FROM jobs WHERE tenant_id = $1', [t.tenantId])).rows[0].n).toBe(0);
  });

  it('applies the depth and cost limits, and answers a malformed document with BAD_USER_INPUT', async () => {
    const t = await signUpTenant(api, 'Ws Shapes');
    const c = connect(t.token);
    const deep = '{ predictions(first: 1) { edges { node { node { id } } } } }';
    expect(code(await once(c, deep))).toBe('QUERY_TOO_COSTLY');
    expect(code(await api.gql(deep, {}, t.token))).toBe('QUERY_TOO_COSTLY');
    const costly = '{ predictions(first: 50) { edges { node { id status } } } }';
    const overWs = await once(c, costly);
    expect(code(overWs)).toBe('QUERY_TOO_COSTLY');
    expect(overWs.errors![0].extensions!.cost).toMatchObject({ limit: 30 });
    expect(code(await api.gql(costly, {}, t.token))).toBe('QUERY_TOO_COSTLY');
    expect(code(await once(c, '{ me { tenant { id } '))).toBe('BAD_USER_INPUT');
    expect(code(await once(c, '{ me { nope } }'))).toBe('BAD_USER_INPUT');
    expect((await once(c, '{ predictions(first: 5) { edges { node { id } } } }')).data.predictions.edges).toEqual([]);
  });

  it('holds at most the plan\'s number of subscriptions open per tenant, and frees a slot when one completes', async () => {
    const t = await freeTenant('Ws Subs');
    const other = await freeTenant('Ws Subs Other');
    // A job that stays QUEUED (no control plane here), so its subscriptions stay open.
    const id = (await api.gql(PREDICT, { input: { service: 'system.echo', input: { message: 'wait' }, wait: 0 } }, t.token)).data.predict.id;
    const c = connect(t.token);
    const sub = `subscription($id: ID!) { predictionUpdated(id: $id) { id status } }`;
    const stops: Array<() => void> = [];
    for (let i = 0; i < 5; i++) {
      const first = await new Promise<Outcome>((resolve) => {
        stops.push(c.subscribe({ query: sub, variables: { id } }, { next: (v) => resolve(v as Outcome), error: (e) => resolve({ errors: e as any }), complete: () => undefined }));
      });
      expect(first.data.predictionUpdated.status).toBe('QUEUED');
    }
    const sixth = await once(c, sub, { id });
    expect(code(sixth)).toBe('RATE_LIMITED');
    expect(sixth.errors![0].message).toMatch(/At most 5 subscriptions/);
    // Another tenant is not affected.
    const otherId = (await api.gql(PREDICT, { input: { service: 'system.echo', input: {}, wait: 0 } }, other.token)).data.predict.id;
    expect((await once(connect(other.token), sub, { id: otherId })).data.predictionUpdated.status).toBe('QUEUED');
    // Completing one frees its slot (once the server has seen the client's complete: a few tries).
    stops.pop()!();
    let again: Outcome = {};
    for (let i = 0; i < 5 && !again.data; i++) {
      await new Promise((r) => setTimeout(r, 300));
      again = await once(c, sub, { id });
    }
    expect(again.data.predictionUpdated.status).toBe('QUEUED');
  });

  it('checks the credential per operation and on open connections: a revoked key loses its subscriptions', async () => {
    const t = await signUpTenant(api, 'Ws Revoked');
    const key = await createApiKey(api, t.token, ['READ', 'PREDICT']);
    const id = (await api.gql(PREDICT, { input: { service: 'system.echo', input: {}, wait: 0 } }, t.token)).data.predict.id;
    const c = connect(key.secret);
    // An open subscription keeps the connection up (the client closes an idle one).
    let ended: (e: unknown) => void;
    const end = new Promise<unknown>((r) => (ended = r));
    const opened = await new Promise<Outcome>((resolve) => {
      c.subscribe({ query: `subscription($id: ID!) { predictionUpdated(id: $id) { id status } }`, variables: { id } },
        { next: (v) => resolve(v as Outcome), error: (e) => ended(e), complete: () => ended('complete') });
    });
    expect(opened.data.predictionUpdated.status).toBe('QUEUED');
    expect((await once(c, '{ me { tenant { id } } }')).data.me.tenant.id).toBe(t.tenantId);
    // The same check on a key that stays valid keeps the connection open.
    await new Promise((r) => setTimeout(r, 500));
    expect((await once(c, '{ me { tenant { id } } }')).data.me.tenant.id).toBe(t.tenantId);

    await api.gql('mutation($id: ID!) { revokeApiKey(id: $id) { id } }', { id: key.id }, t.token);
    // A new operation is refused at once; the open subscription ends with the connection (4403).
    const refused = once(c, '{ me { tenant { id } } }');
    let timer: NodeJS.Timeout | undefined;
    const closed = await Promise.race([end, new Promise((r) => (timer = setTimeout(() => r('still open'), 5000)))]);
    clearTimeout(timer);
    expect((closed as { code?: number }).code).toBe(4403);
    // Refused by the per-operation check (or, if the periodic check came first, cut by the close); never answered.
    const r = await refused;
    expect(r.data).toBeUndefined();
    expect(code(r) === 'UNAUTHENTICATED' || r.errors?.[0]?.extensions?.closeCode === 4403).toBe(true);
    // A new connection with the revoked key is refused at once.
    expect((await once(connect(key.secret), '{ me { tenant { id } } }')).errors?.[0]?.extensions?.closeCode).toBe(4403);
  });
});

describe('GraphQL over WebSocket in production', () => {
  let prod: TestApi;
  beforeAll(async () => {
    prod = await startTestApi({ NODE_ENV: 'production', JWT_SECRET: 'a-production-secret-that-is-long-enough-0123456789', METRICS_TOKEN: 'a-metrics-token-for-tests' });
  });
  afterAll(() => prod.close());

  it('refuses introspection, as over HTTP', async () => {
    const t = await signUpTenant(prod, 'Ws Prod');
    const c = createClient({ url: prod.server.url.replace(/^http/, 'ws'), webSocketImpl: WebSocket, connectionParams: { authorization: `Bearer ${t.token}` }, retryAttempts: 0 });
    clients.push(c);
    const schema = await once(c, '{ __schema { types { name } } }');
    expect(code(schema)).toBe('BAD_USER_INPUT');
    expect(schema.errors![0].message).toMatch(/introspection/i);
    expect(code(await prod.gql('{ __schema { types { name } } }', {}, t.token))).toBe('BAD_USER_INPUT');
    expect((await once(c, '{ me { tenant { id } } }')).data.me.tenant.id).toBe(t.tenantId);
  });
});
