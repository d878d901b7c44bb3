import type { Client } from 'pg';
import { PLAN_LIMITS } from '../../src/modules/tenancy/plans';
import { signUpTenant, startTestApi, type TestApi } from '../support/api';
import { waitFor } from '../support/cluster';
import { ownerClient } from '../support/db';

/**
 * `predict(wait:)` holds a request until its job ends; a tenant can hold at most its plan's number
 * per API process, and the calls beyond are answered at once, as with wait: 0. No control plane
 * runs here, so every job stays QUEUED and every held call waits its full time.
 */

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

it('holds at most the plan\'s number of waiting predicts per tenant; the rest answer at once; other tenants are unaffected', async () => {
  const t = await signUpTenant(api, 'Waiter');
  const other = await signUpTenant(api, 'Other waiter');
  await owner.query(`UPDATE tenants SET plan = 'FREE' WHERE id = $1`, [t.tenantId]);
  api.app.services.tenancy.forgetTenantProfile(t.tenantId);
  const limit = PLAN_LIMITS.FREE.heldWaits;
  // Service calls (the HTTP rate limit would refuse a FREE tenant's burst before the hold limit shows).
  const caller = { principal: await api.app.services.tenancy.authenticate(t.token) };
  const settled: Array<{ status: string }> = [];
  const calls = Array.from({ length: limit + 3 }, (_, i) =>
    api.app.services.jobs.predict(caller, { service: 'system.echo', input: { message: i }, wait: 3 }).then((v) => {
      settled.push(v);
      return v;
    }));
  await waitFor(() => settled.length === 3, 2500, 'the calls beyond the limit to be answered');
  expect(settled.map((v) => v.status)).toEqual(['QUEUED', 'QUEUED', 'QUEUED']);
  // Another tenant's wait is held as usual.
  const otherCaller = { principal: await api.app.services.tenancy.authenticate(other.token) };
  let otherDone = false;
  const otherCall = api.app.services.jobs.predict(otherCaller, { service: 'system.echo', input: {}, wait: 1 }).then(() => (otherDone = true));
  await new Promise((r) => setTimeout(r, 300));
  expect(otherDone).toBe(false);
  const all = await Promise.all(calls);
  await otherCall;
  expect(all.every((v) => v.status === 'QUEUED')).toBe(true);
  expect((await owner.query('SELECT count(*)::int AS n FROM jobs WHERE tenant_id = $1', [t.tenantId])).rows[0].n).toBe(limit + 3);
  // Once the held calls have returned, the slots are free again.
  const again: Array<{ status: string }> = [];
  const more = Array.from({ length: 2 }, () => api.app.services.jobs.predict(caller, { service: 'system.echo', input: {}, wait: 1 }).then((v) => again.push(v)));
  await new Promise((r) => setTimeout(r, 300));
  expect(again).toHaveLength(0);
  await Promise.all(more);
});
