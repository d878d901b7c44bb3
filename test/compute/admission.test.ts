import type { Client } from 'pg';
import { signUpTenant, type TestTenant } from '../support/api';
import { startCluster, waitFor, type TestCluster } from '../support/cluster';
import { ownerClient } from '../support/db';
import { CANCEL, NODES, PREDICT, PREDICTION, QUOTAS, SET_QUOTA } from '../support/gql';

const OPERATOR = `ops-${Date.now()}@nimbus.test`;

let cluster: TestCluster;
let owner: Client;
let op: string;
beforeAll(async () => {
  // Two CPU nodes of one slot each: a 2-device cluster.
  cluster = await startCluster({ agents: [{ name: 'slot-1' }, { name: 'slot-2' }], apiOverrides: { OPERATOR_EMAILS: OPERATOR } });
  owner = await ownerClient();
  // As `npm run operator` makes it: public sign-up refuses an operator's address.
  op = (await cluster.api.app.services.tenancy.signUp({ email: OPERATOR, password: 'operator password', tenantName: 'Platform' }, { operatorAccount: true })).token;
});
afterAll(async () => {
  await owner.end();
  await cluster.close();
});

const submit = async (t: TestTenant, sleepMs: number, message?: string) =>
  (await cluster.api.gql(PREDICT, { input: { service: 'system.echo', input: { sleepMs, message }, wait: 0 } }, t.token)).data.predict.id as string;
const job = async (t: TestTenant, id: string) => (await cluster.api.gql(PREDICTION, { id }, t.token)).data.prediction;
const setQuota = (tenantId: string, guaranteed: number, limit: number) =>
  cluster.api.gql(SET_QUOTA, { input: { tenantId, hardware: 'CPU', guaranteed, limit } }, op);
const cancelAll = (t: TestTenant, ids: string[]) => Promise.all(ids.map((id) => cluster.api.gql(CANCEL, { id }, t.token)));

it('operator operations are for operators only, and public sign-up cannot claim an operator\'s address', async () => {
  const claim = await cluster.api.gql(`mutation($input: SignUpInput!) { signUp(input: $input) { token } }`,
    { input: { email: OPERATOR.toUpperCase(), password: 'a password of mine', tenantName: 'Not the platform' } });
  expect(claim.errors?.[0]?.extensions).toMatchObject({ code: 'FORBIDDEN', field: 'input.email' });
  // The operator's own account, made out of band, logs in and has the role.
  const login = await cluster.api.gql(`mutation($e: String!, $p: String!) { logIn(email: $e, password: $p) { token } }`, { e: OPERATOR, p: 'operator password' });
  expect((await cluster.api.gql(NODES, {}, login.data.logIn.token)).errors).toBeUndefined();
  const t = await signUpTenant(cluster.api);
  for (const q of [NODES, QUOTAS]) expect((await cluster.api.gql(q, {}, t.token)).errors![0].extensions!.code).toBe('FORBIDDEN');
  expect((await setQuota(t.tenantId, 1, 1)).errors).toBeUndefined();
  const t2 = await signUpTenant(cluster.api);
  const denied = await cluster.api.gql(SET_QUOTA, { input: { tenantId: t2.tenantId, hardware: 'CPU', guaranteed: 1, limit: 1 } }, t.token);
  expect(denied.errors![0].extensions!.code).toBe('FORBIDDEN');
  expect((await setQuota(t.tenantId, 3, 2)).errors![0].extensions).toMatchObject({ code: 'BAD_USER_INPUT', field: 'input.limit' });
  // The contract marks hardware optional: CPU when left out.
  const cpu = await cluster.api.gql(`mutation($input: SetQuotaInput!) { setQuota(input: $input) { hardware guaranteed limit } }`,
    { input: { tenantId: t.tenantId, guaranteed: 1, limit: 4 } }, op);
  expect(cpu.data?.setQuota).toEqual({ hardware: 'CPU', guaranteed: 1, limit: 4 });
  const nodes = (await cluster.api.gql(NODES, {}, op)).data.nodes;
  expect(nodes.filter((n: any) => n.status === 'READY').map((n: any) => n.name).sort()).toEqual(['slot-1', 'slot-2']);
});

it('borrows idle capacity up to the limit, and the borrowed job is preempted (requeued, not lost) when a tenant within its guarantee needs it', async () => {
  const a = await signUpTenant(cluster.api, 'A');
  const b = await signUpTenant(cluster.api, 'B');
  await setQuota(a.tenantId, 1, 2);
  await setQuota(b.tenantId, 1, 1);
  const a1 = await submit(a, 30_000, 'a1');
  await waitFor(async () => (await job(a, a1)).status === 'RUNNING', 10_000, 'a1 RUNNING');
  const a2 = await submit(a, 30_000, 'a2');
  await waitFor(async () => (await job(a, a2)).status === 'RUNNING', 10_000, 'a2 RUNNING on borrowed capacity');
  const borrowed = await owner.query('SELECT id, borrowed FROM jobs WHERE id = ANY($1) ORDER BY created_at', [[a1, a2]]);
  expect(borrowed.rows.map((r) => r.borrowed)).toEqual([false, true]);
  const quotas = (await cluster.api.gql(QUOTAS, {}, op)).data.quotas.find((q: any) => q.tenant.id === a.tenantId);
  expect(quotas).toMatchObject({ guaranteed: 1, limit: 2, used: 2 });

  const a3 = await submit(a, 100);
  const b1 = await submit(b, 30_000, 'b1');
  await waitFor(async () => (await job(b, b1)).status === 'RUNNING', 10_000, 'b1 RUNNING after preemption');
  expect((await job(a, a1)).status).toBe('RUNNING');
  const a2Now = await job(a, a2);
  expect(a2Now.status).toBe('QUEUED');
  expect((await job(a, a3)).status).toBe('QUEUED'); // beyond its limit while borrowed capacity is taken
  // The preempted attempt is recorded, not billed, by the preemption itself; its node's late end adds nothing.
  await waitFor(async () => (await owner.query('SELECT 1 FROM usage_ledger WHERE job_id = $1', [a2])).rowCount === 1, 5000, 'a2 ledger');
  const { rows } = await owner.query('SELECT billable, reason FROM usage_ledger WHERE job_id = $1', [a2]);
  expect(rows).toEqual([{ billable: false, reason: 'PREEMPTED' }]);
  // When B is done, A gets its borrowed slot back and the preempted job runs again (attempt 2).
  await cancelAll(b, [b1]);
  await waitFor(async () => { const j = await job(a, a2); return j.status === 'RUNNING' && j.attempt === 2; }, 10_000, 'a2 resumed');
  await cancelAll(a, [a1, a2, a3]);
}, 60_000);

it('orders waiting tenants by fair share: lowest used/guaranteed first, then age', async () => {
  const a = await signUpTenant(cluster.api, 'FairA');
  const b = await signUpTenant(cluster.api, 'FairB');
  await setQuota(a.tenantId, 1, 1);
  await setQuota(b.tenantId, 1, 1);
  // Fill both slots: one job of A (A is at its guarantee) and a blocker of another tenant.
  const blocker = await signUpTenant(cluster.api, 'Blocker');
  await setQuota(blocker.tenantId, 1, 1);
  const x = await submit(blocker, 1500);
  const a1 = await submit(a, 1500);
  await waitFor(async () => (await job(a, a1)).status === 'RUNNING' && (await job(blocker, x)).status === 'RUNNING', 10_000, 'slots busy');
  const a2 = await submit(a, 0, 'a2'); // older, but A already uses its share
  await new Promise((r) => setTimeout(r, 50));
  const b1 = await submit(b, 0, 'b1');
  await waitFor(async () => (await job(a, a2)).status === 'SUCCEEDED' && (await job(b, b1)).status === 'SUCCEEDED', 15_000, 'both done');
  const starts = await owner.query('SELECT id, admitted_at FROM jobs WHERE id = ANY($1)', [[a2, b1]]);
  const at = Object.fromEntries(starts.rows.map((r) => [r.id, +r.admitted_at]));
  expect(at[b1]).toBeLessThanOrEqual(at[a2]);
}, 40_000);

it('a job not started by its deadline ends CANCELED and is not billed', async () => {
  const t = await signUpTenant(cluster.api, 'Deadline');
  await setQuota(t.tenantId, 0, 0);
  const res = await cluster.api.gql(PREDICT, { input: { service: 'system.echo', input: {}, wait: 0, deadlineSeconds: 1 } }, t.token);
  const id = res.data.predict.id;
  await waitFor(async () => (await job(t, id)).status === 'CANCELED', 10_000, 'deadline');
  expect((await job(t, id)).error).toMatchObject({ code: 'DEADLINE_EXCEEDED' });
  expect((await owner.query('SELECT 1 FROM usage_ledger WHERE job_id = $1', [id])).rowCount).toBe(0);
});

it('a queued job can be canceled and never runs', async () => {
  const t = await signUpTenant(cluster.api, 'CancelQ');
  await setQuota(t.tenantId, 0, 0);
  const id = await submit(t, 0);
  expect((await job(t, id)).status).toBe('QUEUED');
  expect((await cluster.api.gql(CANCEL, { id }, t.token)).data.cancelPrediction.status).toBe('CANCELED');
  await setQuota(t.tenantId, 1, 1);
  await new Promise((r) => setTimeout(r, 1000));
  const j = await job(t, id);
  expect(j).toMatchObject({ status: 'CANCELED', attempt: 0, node: null });
});
