import { spawn, type ChildProcess } from 'node:child_process';
import type { Client } from 'pg';
import { Redis } from 'ioredis';
import { signUpTenant, type TestTenant } from '../support/api';
import { startCluster, waitFor, type TestCluster } from '../support/cluster';
import { ownerClient } from '../support/db';
import { PREDICT } from '../support/gql';
import { freePort } from '../support/net';

/**
 * Acceptance: "restart Redis mid-run: no job lost, no ledger row doubled". Unlike faults.test.ts
 * (which only drops connections), this kills a private redis-server with SIGKILL and starts an
 * empty one (no persistence) on the same port: streams, consumer groups, BullMQ queues, node
 * registrations and heartbeats are all gone. Postgres is the truth; the control plane must recover.
 */

const REDIS_BIN = process.env.REDIS_SERVER_BIN ?? '/usr/bin/redis-server';
const TERMINAL = ['SUCCEEDED', 'FAILED', 'CANCELED'];

let port: number;
let redisProc: ChildProcess | null = null;
let cluster: TestCluster | null = null;
let owner: Client | null = null;
let t: TestTenant;


async function startRedis(): Promise<ChildProcess> {
  const child = spawn(REDIS_BIN, ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--protected-mode', 'no'], {
    stdio: ['ignore', 'ignore', 'inherit'],
  });
  const probe = new Redis({ port, host: '127.0.0.1', lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null });
  probe.on('error', () => undefined);
  try {
    await waitFor(async () => {
      if (child.exitCode !== null) throw new Error(`redis-server exited with ${child.exitCode}`);
      try {
        if (probe.status !== 'ready') await probe.connect();
        return (await probe.ping()) === 'PONG';
      } catch {
        probe.disconnect();
        return false;
      }
    }, 10_000, `redis-server on port ${port}`);
  } catch (err) {
    child.kill('SIGKILL');
    throw err;
  } finally {
    probe.disconnect();
  }
  return child;
}

async function killRedis(signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
  const child = redisProc;
  redisProc = null;
  if (!child || child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((r) => child.once('exit', r));
  child.kill(signal);
  await exited;
}

// While Redis is down, BullMQ queues without an 'error' listener print every refused reconnect.
const consoleError = console.error;
beforeAll(() => {
  jest.spyOn(console, 'error').mockImplementation((...args: unknown[]) => {
    if (/ECONNREFUSED|Connection is closed/.test(String((args[0] as Error)?.message ?? args[0]))) return;
    consoleError(...args);
  });
});

beforeAll(async () => {
  port = await freePort();
  redisProc = await startRedis();
  cluster = await startCluster({
    redisUrl: `redis://127.0.0.1:${port}`,
    // Job updates through the restarted Redis's pub/sub, as an API in its own process gets them.
    separateProcesses: true,
    agents: [{ name: 'rr-node-a', devices: 2 }, { name: 'rr-node-b', devices: 2 }],
  });
  owner = await ownerClient();
  t = await signUpTenant(cluster.api, 'RedisRestart');
}, 60_000);

afterAll(async () => {
  await owner?.end().catch(() => undefined);
  await cluster?.close().catch(() => undefined);
  await killRedis();
});

const submit = async (input: Record<string, unknown>) => {
  const res = await cluster!.api.gql(PREDICT, { input: { service: 'system.echo', input, wait: 0 } }, t.token);
  if (!res.data) throw new Error(`predict failed: ${JSON.stringify(res.errors)}`);
  return res.data.predict.id as string;
};

const jobRows = async (ids: string[]) =>
  (await owner!.query(`SELECT id, status, attempt, output, error FROM jobs WHERE id = ANY($1::uuid[])`, [ids])).rows as Array<{
    id: string; status: string; attempt: number; output: any; error: any;
  }>;

const statusCounts = async (ids: string[]) => {
  const counts: Record<string, number> = {};
  for (const r of await jobRows(ids)) counts[r.status] = (counts[r.status] ?? 0) + 1;
  return counts;
};

const ledgerRows = async (ids: string[]) =>
  (await owner!.query(
    `SELECT job_id, attempt, billable, reason, node_id FROM usage_ledger WHERE job_id = ANY($1::uuid[]) ORDER BY job_id, attempt`, [ids],
  )).rows as Array<{ job_id: string; attempt: number; billable: boolean; reason: string | null; node_id: string }>;

/** Every job terminal in Postgres; on timeout the error says which are stuck and where. */
async function waitAllTerminal(ids: string[], timeoutMs: number, what: string): Promise<void> {
  try {
    await waitFor(async () => (await jobRows(ids)).every((r) => TERMINAL.includes(r.status)), timeoutMs, what);
  } catch (err) {
    const stuck = (await jobRows(ids)).filter((r) => !TERMINAL.includes(r.status));
    throw new Error(`${(err as Error).message}; not terminal: ${JSON.stringify(stuck.map((r) => ({ id: r.id, status: r.status, attempt: r.attempt })))}`);
  }
}

/** Each job SUCCEEDED with its own output; exactly one billable ledger row, for its final attempt; no (job, attempt) twice. */
async function expectSucceededOnceBilled(ids: string[], messages: unknown[]): Promise<void> {
  const jobs = new Map((await jobRows(ids)).map((r) => [r.id, r]));
  expect(jobs.size).toBe(ids.length);
  const notSucceeded = [...jobs.values()].filter((j) => j.status !== 'SUCCEEDED').map((j) => ({ id: j.id, status: j.status, error: j.error }));
  expect(notSucceeded).toEqual([]);
  ids.forEach((id, i) => expect(jobs.get(id)!.output).toEqual({ message: messages[i] }));

  const ledger = await ledgerRows(ids);
  const pairs = ledger.map((r) => `${r.job_id}:${r.attempt}`);
  expect(new Set(pairs).size).toBe(pairs.length);
  const billable = new Map<string, typeof ledger>();
  for (const r of ledger) if (r.billable) billable.set(r.job_id, [...(billable.get(r.job_id) ?? []), r]);
  const wrong = ids
    .filter((id) => (billable.get(id)?.length ?? 0) !== 1 || billable.get(id)![0].attempt !== jobs.get(id)!.attempt)
    .map((id) => ({ id, attempt: jobs.get(id)!.attempt, ledger: ledger.filter((r) => r.job_id === id) }));
  expect(wrong).toEqual([]);
  // Non-billable rows are platform faults or superseded attempts, never a second charge for the same run.
  for (const r of ledger) if (!r.billable) expect(['NODE_LOST', 'ATTEMPT_LOST', 'STALE_ATTEMPT']).toContain(r.reason);
}

const eventsKey = () => `${cluster!.api.env.REDIS_PREFIX}:stream:node-events`;

const adminRedis = () => {
  const r = new Redis({ port, host: '127.0.0.1', maxRetriesPerRequest: 1, retryStrategy: () => null });
  r.on('error', () => undefined);
  return r;
};
const runId = async (r: Redis) => /run_id:(\w+)/.exec(await r.info('server'))![1];

/** SIGKILL the server, leave it down for a moment (commands in flight fail or queue), start an empty one on the same port. */
async function restartRedis(downMs = 500): Promise<void> {
  const before = adminRedis();
  const oldRunId = await runId(before).finally(() => before.disconnect());
  await killRedis('SIGKILL');
  await new Promise((r) => setTimeout(r, downMs));
  redisProc = await startRedis();
  // A new server (started with --save '' --appendonly no, so empty): streams, the recorder's
  // consumer group, BullMQ queues and node registrations are gone.
  const after = adminRedis();
  try {
    expect(await runId(after)).not.toBe(oldRunId);
  } finally {
    after.disconnect();
  }
}

it('Redis killed (SIGKILL) and restarted empty mid-run: no job lost, no ledger row doubled, new jobs run', async () => {
  // 20 jobs of 300-800 ms on 4 devices: several waves, so the restart finds some running, some
  // admitted or between events, and some queued.
  const messages = Array.from({ length: 20 }, (_, i) => `before-${i}`);
  const ids = await Promise.all(messages.map((message, i) => submit({ message, sleepMs: 300 + ((i * 137) % 501) })));

  let atKill: Record<string, number> = {};
  await waitFor(async () => {
    atKill = await statusCounts(ids);
    return (atKill.RUNNING ?? 0) >= 2 && (atKill.QUEUED ?? 0) >= 2;
  }, 10_000, 'some jobs RUNNING and some QUEUED');

  await restartRedis();
  const fresh = adminRedis();
  try {
    const restartedWith = await statusCounts(ids);
    // Jobs were still in flight when Redis came back empty (otherwise this test proves nothing).
    expect((restartedWith.SUCCEEDED ?? 0)).toBeLessThan(ids.length);

    // No job lost or stuck: all terminal in Postgres, all SUCCEEDED, each billed exactly once.
    await waitAllTerminal(ids, 30_000, 'every job submitted before the restart to end');
    await expectSucceededOnceBilled(ids, messages);

    // The system recovered its streams, consumer group and dispatch queues: new jobs run too.
    const after = Array.from({ length: 6 }, (_, i) => `after-${i}`);
    const newIds = await Promise.all(after.map((message) => submit({ message, sleepMs: 200 })));
    await waitAllTerminal(newIds, 15_000, 'every job submitted after the restart to end');
    await expectSucceededOnceBilled(newIds, after);
    const groups = (await fresh.xinfo('GROUPS', eventsKey())) as unknown[];
    expect(groups.length).toBe(1);

    if (process.env.TEST_CP_LOG) console.log('statuses at kill', atKill, 'at restart', restartedWith, 'ledger', await ledgerRows(ids));
  } finally {
    fresh.disconnect();
  }
}, 60_000);

it('Redis restarted while node events wait unrecorded in the stream: reconciliation re-runs the lost attempts, each job billed once', async () => {
  const messages = Array.from({ length: 8 }, (_, i) => `lagging-${i}`);
  const ids = await Promise.all(messages.map((message) => submit({ message, sleepMs: 400 })));
  await waitFor(async () => ((await statusCounts(ids)).RUNNING ?? 0) >= 3, 10_000, 'the first wave RUNNING');

  // The recorder lags (its ledger insert waits on this lock): ended/started events pile up in the
  // stream, delivered-unacknowledged or not yet read, and die with Redis. Node agents keep running.
  const locker = await ownerClient();
  let locked = true;
  await locker.query('BEGIN');
  await locker.query('LOCK TABLE usage_ledger IN EXCLUSIVE MODE');
  try {
    const r = adminRedis();
    let backlog = 0;
    try {
      await waitFor(async () => {
        backlog = await r.xlen(eventsKey());
        return backlog >= 4;
      }, 10_000, 'node events to pile up in the stream');
    } finally {
      r.disconnect();
    }
    await restartRedis();
    await new Promise((res) => setTimeout(res, 300));
    await locker.query('COMMIT');
    locked = false;

    await waitAllTerminal(ids, 30_000, 'every job whose events were lost to end');
    await expectSucceededOnceBilled(ids, messages);
    if (process.env.TEST_CP_LOG) console.log('backlog at kill', backlog, 'jobs', await jobRows(ids), 'ledger', await ledgerRows(ids));
  } finally {
    if (locked) await locker.query('ROLLBACK').catch(() => undefined);
    await locker.end().catch(() => undefined);
  }

  const more = await submit({ message: 'after-lag', sleepMs: 100 });
  await waitAllTerminal([more], 15_000, 'a job after the second restart');
  await expectSucceededOnceBilled([more], ['after-lag']);
}, 60_000);
