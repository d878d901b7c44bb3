import type { Client } from 'pg';
import { Redis } from 'ioredis';
import { Scheduler } from '../../src/modules/compute/control-plane/scheduler';
import { keys } from '../../src/platform/queue/messages';
import type { Statement } from '../../src/platform/db/sql';
import { signUpTenant, type TestTenant } from '../support/api';
import { startCluster, waitFor, type TestCluster } from '../support/cluster';
import { ownerClient } from '../support/db';
import { CANCEL, PREDICT, PREDICTION, SET_QUOTA } from '../support/gql';

/**
 * The admitter's decisions when writing them fails, and attempts the control plane takes back
 * when its message to the node is lost. Each failure is injected into the real control plane
 * (two CPU nodes of one slot each), once.
 */
const OPERATOR = `ops-faults-${Date.now()}@nimbus.test`;

let cluster: TestCluster;
let owner: Client;
let redis: Redis;
let op: string;
beforeAll(async () => {
  cluster = await startCluster({ agents: [{ name: 'f-1' }, { name: 'f-2' }], apiOverrides: { OPERATOR_EMAILS: OPERATOR } });
  owner = await ownerClient();
  redis = new Redis(cluster.api.env.REDIS_URL);
  // As `npm run operator` makes it: public sign-up refuses an operator's address.
  op = (await cluster.api.app.services.tenancy.signUp({ email: OPERATOR, password: 'operator password', tenantName: 'Platform' }, { operatorAccount: true })).token;
});
afterAll(async () => {
  redis.disconnect();
  await owner.end();
  await cluster.close();
});

const submit = async (t: TestTenant, sleepMs: number, message?: string) =>
  (await cluster.api.gql(PREDICT, { input: { service: 'system.echo', input: { sleepMs, message }, wait: 0 } }, t.token)).data.predict.id as string;
const job = async (t: TestTenant, id: string) => (await cluster.api.gql(PREDICTION, { id }, t.token)).data.prediction;
const cancelAll = (t: TestTenant, ids: string[]) => Promise.all(ids.map((id) => cluster.api.gql(CANCEL, { id }, t.token)));
const setQuota = (tenantId: string, guaranteed: number, limit: number) =>
  cluster.api.gql(SET_QUOTA, { input: { tenantId, hardware: 'CPU', guaranteed, limit } }, op);
const used = (tenantId: string) => cluster.cp.scheduler.usage().find((u) => u.tenantId === tenantId && u.hardware === 'CPU')?.used ?? 0;

/** Makes the control plane's next run of `name` fail, before (`lost: false`) or after it committed (the answer lost). */
function failNextStatement(name: string, lost: boolean): { failures: () => number; restore: () => void } {
  const pool = cluster.cp.cx.relaxedPool;
  const run = pool.run.bind(pool);
  let failures = 0;
  pool.run = (async (st: Statement, params: unknown[]) => {
    if (st.name !== name || failures > 0) return run(st, params);
    failures++;
    if (lost) await run(st, params);
    throw new Error('Connection terminated unexpectedly (injected)');
  }) as typeof pool.run;
  return { failures: () => failures, restore: () => { pool.run = run; } };
}

afterEach(async () => {
  // Nothing of one test may hold the two slots into the next.
  await waitFor(async () => cluster.cp.scheduler.usage().every((u) => u.used === 0), 20_000, 'slots free after the test');
});

it('an admission whose write fails is taken back and made again: the job runs', async () => {
  const t = await signUpTenant(cluster.api, 'AdmitFails');
  const fault = failNextStatement('scheduler.admit', false);
  try {
    const res = await cluster.api.gql(PREDICT, { input: { service: 'system.echo', input: { message: 'again' }, wait: 15 } }, t.token);
    expect(fault.failures()).toBe(1);
    expect(res.data.predict).toMatchObject({ status: 'SUCCEEDED', output: { message: 'again' }, attempt: 1 });
  } finally {
    fault.restore();
  }
  expect(used(t.tenantId)).toBe(0);
});

it('an admission that committed but whose answer was lost is dispatched by the reconciler, its devices counted until it ends', async () => {
  const t = await signUpTenant(cluster.api, 'AdmitLost');
  const fault = failNextStatement('scheduler.admit', true);
  let id: string;
  try {
    id = await submit(t, 2500, 'lost answer');
    // ADMITTED in Postgres, and re-sent once it has waited redispatchAfterMs (2 s here) without starting.
    await waitFor(async () => (await job(t, id)).status === 'RUNNING', 15_000, 'the job RUNNING after its re-dispatch');
    expect(fault.failures()).toBe(1);
  } finally {
    fault.restore();
  }
  expect(used(t.tenantId)).toBe(1);
  await waitFor(async () => (await job(t, id)).status === 'SUCCEEDED', 15_000, 'the job SUCCEEDED');
  expect((await job(t, id))).toMatchObject({ attempt: 1, output: { message: 'lost answer' } });
  await waitFor(() => used(t.tenantId) === 0, 5000, 'its device given back');
  const ledger = await owner.query('SELECT billable FROM usage_ledger WHERE job_id = $1', [id]);
  expect(ledger.rows).toEqual([{ billable: true }]);
});

it('a preemption whose write fails is taken back and made again: the tenant within its guarantee gets the device', async () => {
  const a = await signUpTenant(cluster.api, 'PreemptA');
  const b = await signUpTenant(cluster.api, 'PreemptB');
  await setQuota(a.tenantId, 1, 2);
  await setQuota(b.tenantId, 1, 1);
  const a1 = await submit(a, 30_000, 'a1');
  const a2 = await submit(a, 30_000, 'a2');
  await waitFor(async () => (await job(a, a1)).status === 'RUNNING' && (await job(a, a2)).status === 'RUNNING', 10_000, 'a1 and a2 RUNNING');

  const db = cluster.cp.cx.db;
  const query = db.query.bind(db);
  let failures = 0;
  db.query = (async (sql: string, params?: unknown[]) => {
    if (failures === 0 && /^UPDATE jobs SET status = 'QUEUED', node_id = NULL, borrowed = false/.test(sql.trim())) {
      failures++;
      throw new Error('Connection terminated unexpectedly (injected)');
    }
    return query(sql, params);
  }) as typeof db.query;
  try {
    const b1 = await submit(b, 30_000, 'b1');
    await waitFor(async () => (await job(b, b1)).status === 'RUNNING', 15_000, 'b1 RUNNING after the retried preemption');
    expect(failures).toBe(1);
    const preempted = await Promise.all([job(a, a1), job(a, a2)]);
    expect(preempted.map((j) => j.status).sort()).toEqual(['QUEUED', 'RUNNING']);
    expect(used(a.tenantId)).toBe(1);
    expect(used(b.tenantId)).toBe(1);
    await cancelAll(b, [b1]);
  } finally {
    db.query = query;
  }
  await cancelAll(a, [a1, a2]);
});

it('an attempt marked stopped ends at its node\'s next heartbeat, with no message sent', async () => {
  const t = await signUpTenant(cluster.api, 'Stopped');
  const id = await submit(t, 30_000, 'to stop');
  await waitFor(async () => (await job(t, id)).status === 'RUNNING', 10_000, 'RUNNING');
  const { attempt } = await job(t, id);
  // What a preemption or a lost node leaves for the node, without the pub/sub message (as if lost).
  await redis.set(keys(cluster.api.env.REDIS_PREFIX).stopped(id, attempt), 'TEST', 'EX', 60);
  // Heartbeats are 1 s apart: it ends long before its 30 s are up.
  await waitFor(async () => (await job(t, id)).status === 'CANCELED', 10_000, 'the stopped attempt to end');
});

it('a cancel whose Redis writes fail after its commit answers CANCELED, and reconciliation stops the running attempt', async () => {
  const t = await signUpTenant(cluster.api, 'LostCancel');
  const id = await submit(t, 30_000, 'cancel lost');
  await waitFor(async () => (await job(t, id)).status === 'RUNNING', 10_000, 'RUNNING');
  const { attempt } = await job(t, id);
  const reported = () => cluster.cp.monitor.knownNodes().some((n) => n.running.includes(`${id}:${attempt}`));
  await waitFor(reported, 5000, 'a heartbeat reporting the attempt');
  // The cancel's marker, message and wake-up all go in one MULTI: make it fail, once.
  const apiRedis = cluster.api.app.redis;
  const multi = apiRedis.multi.bind(apiRedis);
  let broken = 0;
  apiRedis.multi = ((...args: Parameters<typeof multi>) => {
    const m = multi(...args);
    if (broken++ === 0) m.exec = () => Promise.reject(new Error('Connection is closed (injected)'));
    return m;
  }) as typeof apiRedis.multi;
  let res;
  try {
    res = await cluster.api.gql(CANCEL, { id }, t.token);
  } finally {
    apiRedis.multi = multi;
  }
  expect(broken).toBe(1);
  expect(res.errors).toBeUndefined();
  expect(res.data.cancelPrediction.status).toBe('CANCELED');
  await waitFor(() => !reported(), 10_000, 'the node to stop the attempt');
  // Its end is recorded and billed for the seconds it ran, not for the 30 it asked for.
  await waitFor(async () => (await owner.query('SELECT 1 FROM usage_ledger WHERE job_id = $1', [id])).rowCount === 1, 5000, 'its ledger row');
  const { rows: [row] } = await owner.query('SELECT billable, billable_ms::int AS ms FROM usage_ledger WHERE job_id = $1', [id]);
  expect(row.billable).toBe(true);
  expect(row.ms).toBeLessThan(15_000);
  expect((await job(t, id)).status).toBe('CANCELED');
});

it('a lost node whose jobs cannot be requeued at first is tried again: its job runs on the other node', async () => {
  const t = await signUpTenant(cluster.api, 'LostNode');
  const id = await submit(t, 3000, 'survivor');
  await waitFor(async () => (await job(t, id)).status === 'RUNNING', 10_000, 'RUNNING');
  const victim: string = (await owner.query('SELECT node_id FROM jobs WHERE id = $1', [id])).rows[0].node_id;
  const monitor = cluster.cp.monitor;
  const abandon = monitor.abandonAttempts.bind(monitor);
  let failures = 0;
  monitor.abandonAttempts = async (...args: Parameters<typeof abandon>) => {
    if (args[2] === 'NODE_LOST' && failures === 0) {
      failures++;
      throw new Error('Connection terminated unexpectedly (injected)');
    }
    return abandon(...args);
  };
  try {
    await cluster.kill(victim, 'SIGKILL');
    await waitFor(async () => (await job(t, id)).status === 'SUCCEEDED', 30_000, 'the job SUCCEEDED on the other node');
    expect(failures).toBe(1);
  } finally {
    monitor.abandonAttempts = abandon;
  }
  const done = await job(t, id);
  expect(done).toMatchObject({ attempt: 2, output: { message: 'survivor' } });
  expect(done.node.id).not.toBe(victim);
  const ledger = await owner.query('SELECT attempt, billable, reason FROM usage_ledger WHERE job_id = $1 ORDER BY attempt', [id]);
  expect(ledger.rows).toEqual([{ attempt: 1, billable: false, reason: 'NODE_LOST' }, { attempt: 2, billable: true, reason: null }]);
});

it('a control plane starting up reads the admission messages sent while it loaded Postgres (none falls between)', async () => {
  const t = await signUpTenant(cluster.api, 'StartRace');
  const s = new Scheduler(cluster.cp.cx);
  const seen: string[] = [];
  jest.spyOn(s, 'setQuota').mockImplementation((q) => {
    seen.push(q.tenantId);
  });
  // While it reads the queued jobs, an operator's quota change is committed and announced.
  const db = cluster.cp.cx.db;
  const query = db.query.bind(db);
  const load = jest.spyOn(db, 'query').mockImplementation((async (sql: string, params?: unknown[]) => {
    const rows = await query(sql, params);
    if (sql.includes(`status = 'QUEUED' ORDER BY created_at`)) {
      await redis.xadd(keys(cluster.api.env.REDIS_PREFIX).admission, '*', 'm',
        JSON.stringify({ op: 'quota', tenantId: t.tenantId, hardware: 'CPU', guaranteed: 1, limit: 1 }));
    }
    return rows;
  }) as typeof db.query);
  try {
    await s.start([]); // no nodes: it decides nothing, it only reads
  } finally {
    load.mockRestore();
  }
  try {
    await waitFor(() => seen.includes(t.tenantId), 5000, 'the quota message sent during the load');
  } finally {
    await s.stop();
  }
});

it('a quota whose message to the admitter is lost is applied from Postgres by the reconciler', async () => {
  const t = await signUpTenant(cluster.api, 'QuotaLost');
  const redisOfApi = cluster.api.app.redis;
  const xadd = jest.spyOn(redisOfApi, 'xadd').mockImplementationOnce((() => Promise.reject(new Error('injected: Redis unreachable'))) as never);
  try {
    const res = await setQuota(t.tenantId, 0, 1);
    expect(xadd).toHaveBeenCalled();
    // Answered with the quota set (it is committed), not an error.
    expect(res.errors).toBeUndefined();
    expect(res.data.setQuota).toMatchObject({ guaranteed: 0, limit: 1 });
  } finally {
    xadd.mockRestore();
  }
  // Committed in Postgres, never told to the admitter: the reconciler's quota check applies it.
  expect((await owner.query('SELECT guaranteed, "limit" FROM quotas WHERE tenant_id = $1', [t.tenantId])).rows).toEqual([{ guaranteed: 0, limit: 1 }]);
  const admitter = (cluster.cp.scheduler as unknown as { admitter: { explicitQuota(t: string, h: string): unknown } }).admitter;
  await waitFor(() => JSON.stringify(admitter.explicitQuota(t.tenantId, 'CPU')) === JSON.stringify({ guaranteed: 0, limit: 1 }), 5000, 'the quota applied');
});
