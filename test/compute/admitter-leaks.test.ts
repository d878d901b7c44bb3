import { randomUUID } from 'node:crypto';
import { Queue } from 'bullmq';
import type { Client } from 'pg';
import { Redis } from 'ioredis';
import { bullPrefix, keys, type NodeInfo } from '../../src/platform/queue/messages';
import { signUpTenant, type TestTenant } from '../support/api';
import { FAST_SETTINGS, startCluster, waitFor, type TestCluster } from '../support/cluster';
import { ownerClient } from '../support/db';
import { CANCEL, PREDICT, PREDICTION } from '../support/gql';

/**
 * Devices the admitter holds for an attempt that no node will ever report the end of: its job
 * ended (or moved on) in Postgres while no node ran the attempt (its dispatch was lost), or its
 * node's end was lost. The reconciler gives them back once the node has not reported the attempt
 * for a grace period (orphanAfterMs), never while the node still reports it.
 *
 * One real CPU node of one slot, and a GPU node of one slot played by the test (its heartbeats say
 * what it runs; nothing consumes its dispatches). Each node's one device, not a quota, is what the
 * next job waits for (the tenant's quota usage, `used`, is checked as the admitter counts it).
 */
const FAKE = 'fake-gpu';
const GRACE_MS = FAST_SETTINGS.orphanAfterMs!;

let cluster: TestCluster;
let owner: Client;
let redis: Redis;
let k: ReturnType<typeof keys>;
/** What the fake GPU node reports running (`job:attempt`), with each heartbeat. */
const fakeRunning = new Set<string>();
let fakeTimer: NodeJS.Timeout | null = null;

beforeAll(async () => {
  cluster = await startCluster({ agents: [{ name: 'leak-1', devices: 1 }] });
  owner = await ownerClient();
  redis = new Redis(cluster.api.env.REDIS_URL);
  k = keys(cluster.api.env.REDIS_PREFIX);
});
afterAll(async () => {
  if (fakeTimer) clearInterval(fakeTimer);
  redis.disconnect();
  await owner.end();
  await cluster.close();
});
afterEach(async () => {
  await waitFor(async () => cluster.cp.scheduler.usage().every((u) => u.used === 0), 20_000, 'devices free after the test');
});

const job = async (t: TestTenant, id: string) => (await cluster.api.gql(PREDICTION, { id }, t.token)).data.prediction;
const cancel = (t: TestTenant, id: string) => cluster.api.gql(CANCEL, { id }, t.token);
const used = (tenantId: string, hardware: 'CPU' | 'GPU') =>
  cluster.cp.scheduler.usage().find((u) => u.tenantId === tenantId && u.hardware === hardware)?.used ?? 0;
const statusOf = async (id: string) => (await owner.query('SELECT status FROM jobs WHERE id = $1', [id])).rows[0]?.status as string;

/**
 * Drops (as if lost: Redis restarted empty before the node took it) the dispatches to `node` of
 * the jobs `lose` says, and records their job ids. BullMQ's add is where the scheduler's dispatch,
 * and the reconciler's re-dispatch, leave the control plane.
 */
function loseDispatches(node: string, lose: (jobId: string) => boolean): { dropped: Set<string>; restore: () => void } {
  const originalAdd = Queue.prototype.add;
  const dropped = new Set<string>();
  Queue.prototype.add = function (this: Queue, name: string, data: any, opts?: unknown) {
    const ids: string[] = Array.isArray(data?.attempts) ? data.attempts.map((x: { jobId: string }) => x.jobId) : [data?.jobId];
    if (this.name === k.nodeQueue(node) && ids.some(lose)) {
      // A lone attempt, or a batch that holds one: the whole message is lost (so is the rest of a batch, which the reconciler re-sends).
      for (const id of ids) dropped.add(id);
      return Promise.resolve({ id: 'lost' }) as unknown as ReturnType<Queue['add']>;
    }
    return (originalAdd as (...args: unknown[]) => ReturnType<Queue['add']>).call(this, name, data, opts);
  } as Queue['add'];
  return { dropped, restore: () => { Queue.prototype.add = originalAdd; } };
}

it('a job canceled while ADMITTED whose dispatch was lost gives its device back: the next job is admitted and runs', async () => {
  const t = await signUpTenant(cluster.api, 'LostDispatch');
  // Every dispatch to the node is lost until A's id is known; A's, always.
  let a: string | null = null;
  const lost = loseDispatches('leak-1', (id) => a === null || id === a);
  try {
    a = (await cluster.api.gql(PREDICT, { input: { service: 'system.echo', input: { message: 'never dispatched' }, wait: 0 } }, t.token)).data.predict.id as string;
    await waitFor(async () => (await statusOf(a!)) === 'ADMITTED' && lost.dropped.has(a!), 5000, 'A ADMITTED, its dispatch lost');
    expect([...lost.dropped]).toEqual([a]);
    expect(used(t.tenantId, 'CPU')).toBe(1);
    // No node will ever run it, nor report its end: the client cancels it.
    expect((await cancel(t, a)).data.cancelPrediction.status).toBe('CANCELED');

    const b = (await cluster.api.gql(PREDICT, { input: { service: 'system.echo', input: { message: 'b' }, wait: 0 } }, t.token)).data.predict.id as string;
    await waitFor(async () => (await job(t, b)).status === 'SUCCEEDED', 10_000, 'B SUCCEEDED on the device A held');
    expect(await job(t, b)).toMatchObject({ output: { message: 'b' }, attempt: 1 });
    await waitFor(() => used(t.tenantId, 'CPU') === 0, 5000, "the tenant's usage back to none");
    expect(await statusOf(a)).toBe('CANCELED');
    expect((await owner.query('SELECT 1 FROM usage_ledger WHERE job_id = $1', [a])).rows).toEqual([]);
  } finally {
    lost.restore();
  }
});

/** Starts the fake GPU node's heartbeats (every 300 ms; a real node beats every second). */
function startFakeNode(): void {
  const info = { name: FAKE, hardware: 'GPU', devices: 1, gpuModel: 'fake', startedAt: Date.now() };
  const beat = () => {
    const now: NodeInfo = { ...info, running: [...fakeRunning], beatAt: Date.now() } as NodeInfo;
    void redis.multi().sadd(k.nodeSet, FAKE).set(k.node(FAKE), JSON.stringify(now)).set(k.heartbeat(FAKE), String(Date.now()), 'PX', 4000).exec();
  };
  beat();
  fakeTimer = setInterval(beat, 300);
}

/** A GPU prediction inserted QUEUED as the API would (the reconciler adopts it within a tick). */
async function insertGpuJob(tenantId: string, message: string): Promise<string> {
  const id = randomUUID();
  await owner.query(
    `INSERT INTO jobs (id, tenant_id, kind, service, status, hardware, devices, input)
     VALUES ($1, $2, 'PREDICTION', 'system.echo', 'QUEUED', 'GPU', 1, jsonb_build_object('message', $3::text))`, [id, tenantId, message],
  );
  return id;
}

it('a canceled attempt keeps its device while its node still reports it, and gives it back once the node stops reporting it (its end lost)', async () => {
  const t = await signUpTenant(cluster.api, 'StillRunning');
  startFakeNode();
  await waitFor(() => cluster.cp.monitor.nodeInfo(FAKE) !== null, 5000, 'the fake node to register');
  const g1 = await insertGpuJob(t.tenantId, 'g1');
  await waitFor(async () => (await statusOf(g1)) === 'ADMITTED', 5000, 'g1 ADMITTED on the fake node');
  // The node takes it and runs it, as a real one would: it reports it, and says it started.
  fakeRunning.add(`${g1}:1`);
  await redis.xadd(k.events, '*', 'e', JSON.stringify({ type: 'started', jobId: g1, attempt: 1, node: FAKE, at: Date.now() }));
  await waitFor(async () => (await statusOf(g1)) === 'RUNNING', 5000, 'g1 RUNNING');

  // Canceled; the node goes on running it (it has not stopped yet: the admitter must not hand its device on).
  expect((await cancel(t, g1)).data.cancelPrediction.status).toBe('CANCELED');
  const g2 = await insertGpuJob(t.tenantId, 'g2');
  await new Promise((r) => setTimeout(r, 2 * GRACE_MS + 1000));
  expect(await statusOf(g2)).toBe('QUEUED');
  expect(used(t.tenantId, 'GPU')).toBe(1);

  // It stops, and its end is lost (no `ended` event): the device is given back after the grace period.
  fakeRunning.delete(`${g1}:1`);
  await waitFor(async () => (await statusOf(g2)) === 'ADMITTED', GRACE_MS + 5000, 'g2 ADMITTED on the device g1 held');
  expect(used(t.tenantId, 'GPU')).toBe(1);
  // Nothing will run it here either: canceled, and (never reported) its device comes back too.
  await cancel(t, g2);
  await waitFor(() => used(t.tenantId, 'GPU') === 0, GRACE_MS + 5000, 'g2\'s device given back');
  // The dispatches nothing took, dropped.
  const queue = new Queue(k.nodeQueue(FAKE), { connection: cluster.cp.cx.connect('test-fake-queue'), prefix: bullPrefix(cluster.api.env.REDIS_PREFIX) });
  await queue.obliterate({ force: true }).catch(() => undefined);
  await queue.close();
});
