import type { Client } from 'pg';
import { Redis } from 'ioredis';
import { signUpTenant, type TestTenant } from '../support/api';
import { startCluster, waitFor, type TestCluster } from '../support/cluster';
import { ownerClient } from '../support/db';
import { CANCEL, PREDICT, PREDICTION } from '../support/gql';

let cluster: TestCluster;
let owner: Client;
let t: TestTenant;
beforeAll(async () => {
  cluster = await startCluster({ agents: [{ name: 'node-a' }, { name: 'node-b' }] });
  owner = await ownerClient();
  t = await signUpTenant(cluster.api, 'Faulty');
});
afterAll(async () => {
  await owner.end();
  await cluster.close();
});

const submit = async (input: Record<string, unknown>) =>
  (await cluster.api.gql(PREDICT, { input: { service: 'system.echo', input, wait: 0 } }, t.token)).data.predict.id as string;
const status = async (id: string) => (await cluster.api.gql(PREDICTION, { id }, t.token)).data.prediction;
const ledger = async (id: string) =>
  (await owner.query('SELECT attempt, billable, reason, node_id FROM usage_ledger WHERE job_id = $1 ORDER BY attempt', [id])).rows;

it('a node killed with SIGKILL mid-job: the job finishes on the other node, exactly one billable ledger row', async () => {
  const id = await submit({ message: 'survivor', sleepMs: 2500 });
  await waitFor(async () => (await status(id)).status === 'RUNNING', 10_000, 'RUNNING');
  const victim = (await status(id)).node.id as string;
  await cluster.kill(victim, 'SIGKILL');
  await waitFor(async () => (await status(id)).status === 'SUCCEEDED', 20_000, 'SUCCEEDED elsewhere');
  const done = await status(id);
  expect(done.node.id).not.toBe(victim);
  expect(done.attempt).toBe(2);
  expect(done.output).toEqual({ message: 'survivor' });
  const rows = await ledger(id);
  expect(rows).toEqual([
    { attempt: 1, billable: false, reason: 'NODE_LOST', node_id: victim },
    { attempt: 2, billable: true, reason: null, node_id: done.node.id },
  ]);
  const { rows: [node] } = await owner.query('SELECT status FROM nodes WHERE id = $1', [victim]);
  expect(node.status).toBe('LOST');
  await cluster.startAgent(victim);
}, 60_000);

it('a job whose attempts keep dying on lost nodes ends FAILED after max attempts with a clear error', async () => {
  await owner.query(`SELECT 1`);
  const id = await submit({ sleepMs: 60_000 });
  for (let attempt = 1; attempt <= 3; attempt++) {
    await waitFor(async () => { const s = await status(id); return s.status === 'RUNNING' && s.attempt === attempt; }, 20_000, `attempt ${attempt} RUNNING`);
    const node = (await status(id)).node.id as string;
    await cluster.kill(node, 'SIGKILL');
    await cluster.startAgent(node);
  }
  await waitFor(async () => (await status(id)).status === 'FAILED', 20_000, 'FAILED');
  expect((await status(id)).error).toEqual({ code: 'NODE_LOST', message: expect.stringMatching(/after 3 attempts/) });
  expect((await ledger(id)).map((r) => r.billable)).toEqual([false, false, false]);
}, 90_000);

it('Redis connections dropped mid-run: no job lost, no ledger row doubled', async () => {
  const ids = await Promise.all(Array.from({ length: 6 }, (_, i) => submit({ message: i, sleepMs: 800 })));
  await new Promise((r) => setTimeout(r, 300));
  const admin = new Redis(cluster.api.env.REDIS_URL);
  const list = await admin.client('LIST') as string;
  const mine = list.split('\n').filter((l) => l.includes(`name=${cluster.api.env.REDIS_PREFIX}`));
  expect(mine.length).toBeGreaterThan(5);
  for (const line of mine) {
    const clientId = /id=(\d+)/.exec(line)![1];
    await admin.client('KILL', 'ID', clientId).catch(() => undefined);
  }
  admin.disconnect();
  for (const id of ids) await waitFor(async () => (await status(id)).status === 'SUCCEEDED', 30_000, `job ${id}`);
  for (const id of ids) {
    const rows = await ledger(id);
    expect(rows.filter((r) => r.billable)).toHaveLength(1);
  }
  const more = await submit({ message: 'after' });
  await waitFor(async () => (await status(more)).status === 'SUCCEEDED', 15_000, 'a job after the drop');
}, 60_000);
