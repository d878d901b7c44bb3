import { randomBytes, randomUUID } from 'node:crypto';
import { Queue } from 'bullmq';
import { Redis } from 'ioredis';
import type { Client } from 'pg';
import { signUpTenant, type TestTenant } from '../support/api';
import { startCluster, type TestCluster } from '../support/cluster';
import { ownerClient } from '../support/db';
import { CANCEL, PREDICT } from '../support/gql';
import { bullPrefix, keys, type NodeEvent } from '../../src/platform/queue/messages';
import { NodeAgent } from '../../workers/node-agent/agent';
import { sleep as abortableSleep } from '../../workers/node-agent/runtimes/echo';

/**
 * The ledger under races between an attempt's end and the control plane taking the attempt back
 * (preemption, a node given up as lost), and a node running two attempts of one job. No node
 * agents run for the ledger cases: jobs are arranged in Postgres and the real Recorder /
 * Scheduler / NodeMonitor / Reconciler code is driven with crafted node events, so every
 * interleaving is deterministic.
 */
let cluster: TestCluster;
let owner: Client;
let t: TestTenant;
const GHOST = 'ghost-node';

beforeAll(async () => {
  cluster = await startCluster({ agents: [] });
  owner = await ownerClient();
  t = await signUpTenant(cluster.api, 'Audit');
});
afterAll(async () => {
  await owner?.end();
  await cluster?.close();
});

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A QUEUED job (no node exists, so nothing admits it). */
async function newJob(extra: Record<string, unknown> = {}): Promise<string> {
  const res = await cluster.api.gql(PREDICT, { input: { service: 'system.echo', input: { message: 'x' }, wait: 0, ...extra } }, t.token);
  if (!res.data) throw new Error(JSON.stringify(res.errors));
  return res.data.predict.id as string;
}

/** As if the admitter had admitted it to GHOST (attempt n) and, optionally, its start was recorded. */
async function arrange(id: string, o: { attempt: number; status: 'ADMITTED' | 'RUNNING'; borrowed?: boolean; maxAttempts?: number }) {
  // Out of the admitter's queue first, so it cannot be re-admitted under the test.
  cluster.cp.scheduler.dequeue(id);
  await owner.query(
    `UPDATE jobs SET status = $2, attempt = $3, node_id = $4, borrowed = $5, admitted_at = now() - interval '3 s',
            started_at = CASE WHEN $2 = 'RUNNING' THEN now() - interval '2 s' END, max_attempts = $6
      WHERE id = $1`,
    [id, o.status, o.attempt, GHOST, o.borrowed ?? false, o.maxAttempts ?? 3],
  );
}

function ended(id: string, attempt: number, status: 'SUCCEEDED' | 'CANCELED' = 'SUCCEEDED'): NodeEvent {
  const endedAt = Date.now();
  return {
    type: 'ended', jobId: id, attempt, node: GHOST, status, startedAt: endedAt - 2000, endedAt, devices: 1, hardware: 'CPU',
    durationMs: 2000, ...(status === 'SUCCEEDED' ? { output: { message: 'x' } } : { error: { code: 'CANCELED', message: 'stopped' } }),
  };
}

const ledger = async (id: string) =>
  (await owner.query('SELECT attempt, billable, reason FROM usage_ledger WHERE job_id = $1 ORDER BY attempt', [id])).rows;
/** What the tenant's bill and spend limit see: the month totals the ledger's trigger keeps. */
const monthTotalMs = async () =>
  Number((await owner.query('SELECT COALESCE(sum(billable_ms), 0) AS ms FROM usage_month_totals WHERE tenant_id = $1', [t.tenantId])).rows[0].ms);
const job = async (id: string) => (await owner.query('SELECT status, attempt, error FROM jobs WHERE id = $1', [id])).rows[0];

/** The scheduler's real preemption write (private): requeues the victim, tells its node. */
const preempt = (id: string) =>
  (cluster.cp.scheduler as any).applyPreemptions([{ jobId: id, forJobId: '00000000-0000-0000-0000-000000000000', victim: null }]) as Promise<void>;

/**
 * Runs `first` and then `second` against a job row that a third transaction holds locked, so both
 * queue on the row lock in that order; then releases it. `second` thus starts (takes its snapshot)
 * before `first` commits and gets the lock only after it.
 */
async function raceOnRow(id: string, first: () => Promise<unknown>, second: () => Promise<unknown>): Promise<void> {
  const holder = await ownerClient();
  try {
    await holder.query('BEGIN');
    await holder.query('SELECT 1 FROM jobs WHERE id = $1 FOR UPDATE', [id]);
    const a = first();
    await sleep(300);
    const b = second();
    await sleep(300);
    await holder.query('COMMIT');
    await Promise.all([a, b]);
  } finally {
    await holder.end();
  }
}

describe('ledger: an attempt the control plane took back is recorded, never billed', () => {
  it('the end of a job\'s current attempt is billed once (the control case)', async () => {
    const before = await monthTotalMs();
    const id = await newJob();
    await arrange(id, { attempt: 1, status: 'RUNNING' });
    await cluster.cp.recorder.handleBatch([ended(id, 1)]);
    await cluster.cp.recorder.handleBatch([ended(id, 1)]); // a replayed end
    expect(await job(id)).toMatchObject({ status: 'SUCCEEDED', attempt: 1 });
    expect(await ledger(id)).toEqual([{ attempt: 1, billable: true, reason: null }]);
    expect(await monthTotalMs()).toBe(before + 2000);
  });

  it('an end racing a preemption of its attempt: the preemption wins, the attempt is recorded PREEMPTED, and only its rerun will bill', async () => {
    const before = await monthTotalMs();
    const id = await newJob();
    await arrange(id, { attempt: 1, status: 'RUNNING', borrowed: true });
    // The preemption commits while the recorder's end statement for the same attempt waits on the row.
    await raceOnRow(id, () => preempt(id), () => cluster.cp.recorder.handleBatch([ended(id, 1)]));
    expect(await job(id)).toMatchObject({ status: 'QUEUED', attempt: 1 }); // its result discarded, to run again
    expect(await ledger(id)).toEqual([{ attempt: 1, billable: false, reason: 'PREEMPTED' }]);
    expect(await monthTotalMs()).toBe(before);
  });

  it('an end racing a writer that requeues the job without a ledger row is judged by the row as committed, not by the statement\'s snapshot', async () => {
    const before = await monthTotalMs();
    const id = await newJob();
    await arrange(id, { attempt: 1, status: 'RUNNING', borrowed: true });
    await raceOnRow(id,
      () => owner.query(`UPDATE jobs SET status = 'QUEUED', node_id = NULL WHERE id = $1`, [id]),
      () => cluster.cp.recorder.handleBatch([ended(id, 1)]));
    expect(await job(id)).toMatchObject({ status: 'QUEUED', attempt: 1 });
    expect(await ledger(id)).toEqual([{ attempt: 1, billable: false, reason: 'STALE_ATTEMPT' }]);
    expect(await monthTotalMs()).toBe(before);
  });

  it('an end racing the node monitor giving the attempt up (its start never recorded) is not billed', async () => {
    const before = await monthTotalMs();
    const id = await newJob();
    // The node ran it, but its (held back) `started` event was never recorded: ADMITTED in Postgres.
    await arrange(id, { attempt: 1, status: 'ADMITTED' });
    await raceOnRow(id,
      () => cluster.cp.monitor.abandonAttempts('id = $1', [id], 'NODE_LOST', `node ${GHOST} lost (heartbeat missed)`),
      () => cluster.cp.recorder.handleBatch([ended(id, 1)]));
    expect(await job(id)).toMatchObject({ status: 'QUEUED', attempt: 1 });
    expect(await ledger(id)).toEqual([{ attempt: 1, billable: false, reason: 'NODE_LOST' }]);
    expect(await monthTotalMs()).toBe(before);
  });

  it('a preempted attempt whose job is then canceled in the queue is not billed when its end comes in', async () => {
    const before = await monthTotalMs();
    const id = await newJob();
    await arrange(id, { attempt: 1, status: 'RUNNING', borrowed: true });
    await preempt(id);
    expect(await job(id)).toMatchObject({ status: 'QUEUED', attempt: 1 });
    const c = await cluster.api.gql(CANCEL, { id }, t.token);
    expect(c.data.cancelPrediction.status).toBe('CANCELED');
    await cluster.cp.recorder.handleBatch([ended(id, 1, 'CANCELED')]);
    expect(await ledger(id)).toEqual([{ attempt: 1, billable: false, reason: 'PREEMPTED' }]);
    expect(await monthTotalMs()).toBe(before);
  });

  it('a preempted attempt whose requeued job then passes its deadline is not billed when its end comes in', async () => {
    const before = await monthTotalMs();
    const id = await newJob({ deadlineSeconds: 1 });
    await arrange(id, { attempt: 1, status: 'RUNNING', borrowed: true });
    await preempt(id);
    await sleep(1300);
    await (cluster.cp.reconciler as any).expireDeadlines();
    expect(await job(id)).toMatchObject({ status: 'CANCELED', error: { code: 'DEADLINE_EXCEEDED' } });
    await cluster.cp.recorder.handleBatch([ended(id, 1, 'CANCELED')]);
    expect(await ledger(id)).toEqual([{ attempt: 1, billable: false, reason: 'PREEMPTED' }]);
    expect(await monthTotalMs()).toBe(before);
  });

  it('a last attempt given up as NODE_LOST (job FAILED) is not billed when its stalled node comes back and reports it', async () => {
    const before = await monthTotalMs();
    const id = await newJob();
    await arrange(id, { attempt: 3, status: 'ADMITTED', maxAttempts: 3 });
    await cluster.cp.monitor.abandonAttempts('id = $1', [id], 'NODE_LOST', `node ${GHOST} lost (heartbeat missed)`);
    expect(await job(id)).toMatchObject({ status: 'FAILED', error: { code: 'NODE_LOST' } });
    await cluster.cp.recorder.handleBatch([ended(id, 3)]);
    expect(await job(id)).toMatchObject({ status: 'FAILED' });
    expect(await ledger(id)).toEqual([{ attempt: 3, billable: false, reason: 'NODE_LOST' }]);
    expect(await monthTotalMs()).toBe(before);
  });
});

describe('node agent: two attempts of one job on one node', () => {
  it('a stale attempt is stopped from its marker though its job was re-admitted to the same node, and its end does not hide the new attempt from heartbeats', async () => {
    const prefix = `audit-agent-${randomBytes(4).toString('hex')}`;
    const k = keys(prefix);
    const redisUrl = cluster.api.env.REDIS_URL;
    const runtimes = {
      async run(_s: string, input: any, ctx: { signal: AbortSignal }) {
        await abortableSleep(input.sleepMs, ctx.signal);
        return { output: { ok: true }, metrics: { loadMs: 0, runMs: input.sleepMs } };
      },
      async warm() {},
      async close() {},
    };
    const agent = new NodeAgent({ name: 'n1', hardware: 'CPU', devices: 2, redisUrl, prefix, runtimes: runtimes as any });
    await agent.start();
    const redis = new Redis(redisUrl);
    const qConn = new Redis(redisUrl, { maxRetriesPerRequest: null });
    const q = new Queue(k.nodeQueue('n1'), { connection: qConn, prefix: bullPrefix(prefix) });
    const jobId = randomUUID();
    const dispatch = (attempt: number, sleepMs: number) => q.add('system.echo', {
      jobId, tenantId: t.tenantId, attempt, service: 'system.echo', input: { sleepMs }, devices: 1, hardware: 'CPU', deadlineAt: null,
    }, { jobId: `${jobId}.${attempt}`, removeOnComplete: true });
    const reported = async () => (JSON.parse((await redis.get(k.node('n1'))) ?? '{}').running ?? []) as string[];
    const endOf = async (attempt: number) => {
      const entries = (await redis.xrange(k.events, '-', '+')) as Array<[string, string[]]>;
      return entries.map(([, f]) => JSON.parse(f[1])).find((e) => e.type === 'ended' && e.attempt === attempt) ?? null;
    };
    try {
      await dispatch(1, 5000);
      const t0 = Date.now();
      while (!(await reported()).includes(`${jobId}:1`) && Date.now() - t0 < 5000) await sleep(50);
      // Attempt 1 is preempted (its marker set; the pub/sub message lost, as the design allows) and
      // the job, re-admitted at once, lands on the same node as attempt 2.
      await redis.set(k.stopped(jobId, 1), 'PREEMPTED', 'EX', 60);
      const stoppedAt = Date.now();
      await dispatch(2, 12_000);
      // Within a heartbeat or two, attempt 1 should be stopped (CANCELED) from its marker.
      await sleep(1800);
      const end1 = await endOf(1);
      // Let attempt 1 reach its natural end if it was not stopped, then look at the heartbeat.
      while (!(await endOf(1)) && Date.now() - stoppedAt < 8000) await sleep(100);
      await sleep(1500);
      const running = await reported();
      expect({ attempt1EndedBy1800ms: end1?.status ?? null, heartbeatReportsAttempt2: running.includes(`${jobId}:2`) })
        .toEqual({ attempt1EndedBy1800ms: 'CANCELED', heartbeatReportsAttempt2: true });
    } finally {
      await agent.stop();
      await q.obliterate({ force: true }).catch(() => undefined);
      await q.close();
      qConn.disconnect(); // BullMQ leaves a connection it was handed open
      const left = await redis.keys(`${prefix}*`);
      if (left.length) await redis.del(...left);
      redis.disconnect();
    }
  }, 30_000);
});
