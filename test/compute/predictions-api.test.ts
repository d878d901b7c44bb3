import type { Client } from 'pg';
import { signUpTenant, type TestTenant } from '../support/api';
import { startCluster, waitFor, type TestCluster } from '../support/cluster';
import { ownerClient } from '../support/db';
import { PREDICTIONS } from '../support/gql';

/**
 * The predictions API's edges: pages over rows that share a created_at, the cost of a connection
 * asked for a negative page, and a client that goes away in the middle of a wait.
 */

let cluster: TestCluster;
let owner: Client;
beforeAll(async () => {
  cluster = await startCluster({ agents: [{ name: 'cpu-audit', devices: 2 }] });
  owner = await ownerClient();
});
afterAll(async () => {
  await owner.end();
  await cluster.close();
});

const gql = (q: string, v: Record<string, unknown>, t: TestTenant) => cluster.api.gql(q, v, t.token);
const callerOf = async (t: TestTenant) => ({ principal: await cluster.api.app.services.tenancy.authenticate(t.token) });

describe('predictions pagination', () => {
  it('pages through jobs inserted in one batch (one created_at, to the microsecond) without skipping or repeating any', async () => {
    const t = await signUpTenant(cluster.api, 'Pager');
    const caller = await callerOf(t);
    // Concurrent creates of one tenant go in one group commit: one statement, one now().
    const created = await Promise.all(Array.from({ length: 8 }, (_, i) =>
      cluster.api.app.services.jobs.predict(caller, { service: 'system.echo', input: { message: i }, wait: 0 })));
    const ids = created.map((v) => v.id);
    const ties = await owner.query(
      `SELECT count(DISTINCT created_at)::int AS distinct_times FROM jobs WHERE tenant_id = $1`, [t.tenantId]);
    expect(ties.rows[0].distinct_times).toBeLessThan(8); // several share a created_at (microseconds)

    const seen: string[] = [];
    let after: string | null = null;
    for (let page = 0; page < 20; page++) {
      const res = await gql(PREDICTIONS, { first: 2, after }, t);
      expect(res.errors).toBeUndefined();
      const conn = res.data.predictions;
      seen.push(...conn.edges.map((e: any) => e.node.id));
      if (!conn.pageInfo.hasNextPage) break;
      after = conn.pageInfo.endCursor;
    }
    expect(new Set(seen).size).toBe(seen.length);
    expect([...seen].sort()).toEqual([...ids].sort());
  });
});

describe('query cost', () => {
  it('counts a connection asked for a negative page at one item, so it cannot pull an over-limit query under the cost limit', async () => {
    const t = await signUpTenant(cluster.api, 'Coster');
    const big = `edges { node { id status createdAt output logs attempt progress } }`;
    const over = `query { a: predictions(first: 100) { ${big} } b: predictions(first: 100) { ${big} } }`;
    const refused = await gql(over, {}, t);
    expect(refused.errors?.[0]?.extensions?.code).toBe('QUERY_TOO_COSTLY');
    // The same two connections, plus one that can never run (first must be 1..100): still over the limit.
    const sneaky = `query { a: predictions(first: 100) { ${big} } b: predictions(first: 100) { ${big} }
      c: predictions(first: -100000) { pageInfo { hasNextPage } } }`;
    const res = await gql(sneaky, {}, t);
    // Today: the cost walk sums 1 + 100×9 twice and 1 + (-100000)×2 (negative), so the query is
    // executed: a and b run their reads, and c fails in pageSize (BAD_USER_INPUT; data null, as the
    // connections are non-null).
    expect(res.errors?.[0]?.extensions?.code).toBe('QUERY_TOO_COSTLY');
  });
});

describe('held waits', () => {
  it('a client that disconnects mid-wait gives its held-wait slot back at once: the server stops waiting for nobody', async () => {
    const t = await signUpTenant(cluster.api, 'Leaver');
    await owner.query(`UPDATE tenants SET plan = 'FREE' WHERE id = $1`, [t.tenantId]);
    cluster.api.app.services.tenancy.forgetTenantProfile(t.tenantId);
    const held = () => ((cluster.api.app.services.jobs as unknown as { heldWaits: Map<string, number> }).heldWaits.get(t.tenantId) ?? 0);
    const body = JSON.stringify({
      query: `mutation($input: PredictInput!) { predict(input: $input) { id status } }`,
      variables: { input: { service: 'system.echo', input: { sleepMs: 60_000 }, wait: 30 } },
    });
    // FREE: 10 held waits. Ten clients start a 30 s wait and go away after half a second.
    const aborts = Array.from({ length: 10 }, () => new AbortController());
    const calls = aborts.map((c) => fetch(cluster.api.server.url, {
      method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${t.token}` }, body, signal: c.signal,
    }).catch(() => null));
    await waitFor(() => held() === 10, 5000, 'ten held waits');
    for (const c of aborts) c.abort();
    await Promise.all(calls);
    await new Promise((r) => setTimeout(r, 1000));
    try {
      // Nobody waits any more: the slots should be free, so a new call is held as usual.
      expect(held()).toBe(0);
      const caller = await callerOf(t);
      const t0 = Date.now();
      const v = await cluster.api.app.services.jobs.predict(caller, { service: 'system.echo', input: { sleepMs: 60_000 }, wait: 2 });
      expect(Date.now() - t0).toBeGreaterThanOrEqual(1500); // held, not answered at once
      await cluster.api.app.services.jobs.cancelPrediction(caller, v.id);
    } finally {
      const { rows } = await owner.query(`SELECT id FROM jobs WHERE tenant_id = $1 AND status IN ('QUEUED','ADMITTED','RUNNING')`, [t.tenantId]);
      const caller = await callerOf(t);
      for (const r of rows) await cluster.api.app.services.jobs.cancelPrediction(caller, r.id).catch(() => undefined);
    }
  });
});
