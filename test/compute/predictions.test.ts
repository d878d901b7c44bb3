import { randomUUID } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Queue } from 'bullmq';
import { createClient } from 'graphql-ws';
import WebSocket from 'ws';
import type { Client } from 'pg';
import { verifyWebhookSignature } from '../../src/modules/compute/webhook-signing';
import { bullPrefix, keys } from '../../src/platform/queue/messages';
import { createApiKey, signUpTenant, type TestTenant } from '../support/api';
import { startCluster, waitFor, type TestCluster } from '../support/cluster';
import { ownerClient } from '../support/db';
import { startWebhookReceiver, type Received, type WebhookReceiver } from '../support/receiver';
import { CANCEL, PREDICT, PREDICTION, PREDICTIONS } from '../support/gql';

let cluster: TestCluster;
let owner: Client;
let a: TestTenant;
let b: TestTenant;
beforeAll(async () => {
  cluster = await startCluster({ agents: [{ name: 'cpu-1', devices: 2 }] });
  owner = await ownerClient();
  a = await signUpTenant(cluster.api, 'Alpha');
  b = await signUpTenant(cluster.api, 'Beta');
});
afterAll(async () => {
  await owner.end();
  await cluster.close();
});

const gql = (q: string, v: Record<string, unknown>, t: TestTenant | string) => cluster.api.gql(q, v, typeof t === 'string' ? t : t.token);
const echo = (input: Record<string, unknown>, extra: Record<string, unknown> = {}) => ({ input: { service: 'system.echo', input, ...extra } });
const ledger = (jobId: string) => owner.query('SELECT attempt, billable, billable_ms::int AS ms, reason FROM usage_ledger WHERE job_id = $1 ORDER BY attempt', [jobId]).then((r) => r.rows);

describe('predict with system.echo', () => {
  it('waits for the result through the queue and a node, and records exactly one billable ledger row', async () => {
    const res = await gql(PREDICT, echo({ message: { hello: 'world' }, sleepMs: 50 }, { wait: 10 }), a);
    expect(res.errors).toBeUndefined();
    const p = res.data.predict;
    expect(p).toMatchObject({ status: 'SUCCEEDED', output: { message: { hello: 'world' } }, error: null, attempt: 1, node: { id: 'cpu-1' } });
    expect(p.usage.hardware).toBe('CPU');
    expect(p.usage.seconds).toBeGreaterThanOrEqual(0.05);
    const rows = await ledger(p.id);
    expect(rows).toEqual([{ attempt: 1, billable: true, ms: expect.any(Number), reason: null }]);
    expect(rows[0].ms).toBe(Math.round(p.usage.seconds * 1000));
  });

  it('returns at once with wait 0, and the prediction can be polled to SUCCEEDED', async () => {
    const res = await gql(PREDICT, echo({ message: 'later', sleepMs: 200 }, { wait: 0 }), a);
    expect(['QUEUED', 'ADMITTED', 'RUNNING']).toContain(res.data.predict.status);
    const id = res.data.predict.id;
    await waitFor(async () => (await gql(PREDICTION, { id }, a)).data.prediction.status === 'SUCCEEDED', 10_000, 'SUCCEEDED');
    const done = (await gql(PREDICTION, { id }, a)).data.prediction;
    expect(done).toMatchObject({ output: { message: 'later' }, progress: 1 });
  });

  it('reports progress and logs, and a failing job ends FAILED with JOB_FAILED', async () => {
    const fail = await gql(PREDICT, echo({ fail: true }, { wait: 10 }), a);
    expect(fail.data.predict).toMatchObject({ status: 'FAILED', error: { code: 'JOB_FAILED' } });
    const res = await gql(PREDICT, echo({ sleepMs: 1500, progressSteps: 5 }, { wait: 0 }), a);
    const id = res.data.predict.id;
    const seen = new Set<number>();
    await waitFor(async () => {
      const p = (await gql(PREDICTION, { id }, a)).data.prediction;
      seen.add(p.progress);
      return p.status === 'SUCCEEDED';
    }, 10_000, 'echo with progress');
    expect([...seen].some((x) => x > 0 && x < 1)).toBe(true);
  });

  it('holds a request only up to wait seconds, then returns the job still running', async () => {
    const t0 = Date.now();
    const res = await gql(PREDICT, echo({ sleepMs: 4000 }, { wait: 1 }), a);
    expect(Date.now() - t0).toBeLessThan(3000);
    expect(['ADMITTED', 'RUNNING']).toContain(res.data.predict.status);
    await gql(CANCEL, { id: res.data.predict.id }, a);
  });

  it('a waited-for job is inserted without waiting for the disk, so a wait that times out flushes before answering', async () => {
    const inserter = (cluster.api.app.services.jobs as unknown as { inserter: { barrier(): Promise<void> } }).inserter;
    const barrier = jest.spyOn(inserter, 'barrier');
    try {
      const done = (await gql(PREDICT, echo({ message: 'quick' }, { wait: 10 }), a)).data.predict;
      expect(done.status).toBe('SUCCEEDED');
      expect(barrier).not.toHaveBeenCalled(); // its end was a durable commit
      const slow = (await gql(PREDICT, echo({ sleepMs: 3000 }, { wait: 1 }), a)).data.predict;
      expect(['ADMITTED', 'RUNNING']).toContain(slow.status);
      expect(barrier).toHaveBeenCalledTimes(1);
      await gql(CANCEL, { id: slow.id }, a);
    } finally {
      barrier.mockRestore();
    }
  });

  it('gives the same job for the same idempotency key and the same request, whatever the order of its JSON keys', async () => {
    const key = `k-${Date.now()}`;
    const first = await gql(PREDICT, echo({ message: { a: 1, b: [1, 2] }, sleepMs: 1 }, { wait: 10, idempotencyKey: key }), a);
    expect(first.errors).toBeUndefined();
    const second = await gql(PREDICT, { input: { idempotencyKey: key, wait: 10, input: { sleepMs: 1, message: { b: [1, 2], a: 1 } }, service: 'system.echo' } }, a);
    expect(second.errors).toBeUndefined();
    expect(second.data.predict.id).toBe(first.data.predict.id);
    expect(second.data.predict.output).toEqual({ message: { a: 1, b: [1, 2] } });
    const { rows } = await owner.query('SELECT count(*)::int AS n, min(request_hash) AS hash FROM jobs WHERE idempotency_key = $1', [key]);
    expect(rows[0]).toEqual({ n: 1, hash: expect.stringMatching(/^[0-9a-f]{64}$/) });
    // The same key in another tenant is another job.
    const other = await gql(PREDICT, echo({ message: 3 }, { wait: 10, idempotencyKey: key }), b);
    expect(other.data.predict.id).not.toBe(first.data.predict.id);
  });

  it('refuses the same idempotency key with a different input: CONFLICT, and no second job', async () => {
    const key = `k-diff-${Date.now()}`;
    const first = await gql(PREDICT, echo({ message: 1 }, { wait: 10, idempotencyKey: key }), a);
    expect(first.data.predict.status).toBe('SUCCEEDED');
    const second = await gql(PREDICT, echo({ message: 2 }, { wait: 10, idempotencyKey: key }), a);
    expect(second.data).toBeNull();
    expect(second.errors?.[0]).toMatchObject({
      message: expect.stringContaining('used for a different request'), extensions: { code: 'CONFLICT', field: 'input.idempotencyKey' },
    });
    // So is a different webhook URL or deadline: they are part of the request too.
    const deadline = await gql(PREDICT, echo({ message: 1 }, { wait: 10, idempotencyKey: key, deadlineSeconds: 600 }), a);
    expect(deadline.errors?.[0]?.extensions?.code).toBe('CONFLICT');
    const { rows } = await owner.query('SELECT id, input FROM jobs WHERE idempotency_key = $1', [key]);
    expect(rows).toEqual([{ id: first.data.predict.id, input: expect.objectContaining({ message: 1 }) }]);
    // The job itself is untouched, and the original request still gets it.
    const again = await gql(PREDICT, echo({ message: 1 }, { wait: 10, idempotencyKey: key }), a);
    expect(again.data.predict).toMatchObject({ id: first.data.predict.id, output: { message: 1 } });
  });

  it('gives the same job for the same idempotency key and request with a different wait', async () => {
    const key = `k-wait-${Date.now()}`;
    const first = await gql(PREDICT, echo({ message: 'w', sleepMs: 300 }, { wait: 0, idempotencyKey: key }), a);
    expect(first.errors).toBeUndefined();
    const waited = await gql(PREDICT, echo({ message: 'w', sleepMs: 300 }, { wait: 10, idempotencyKey: key }), a);
    expect(waited.errors).toBeUndefined();
    expect(waited.data.predict).toMatchObject({ id: first.data.predict.id, status: 'SUCCEEDED', output: { message: 'w' } });
    const noWait = await gql(PREDICT, echo({ message: 'w', sleepMs: 300 }, { idempotencyKey: key }), a); // the default wait
    expect(noWait.data.predict.id).toBe(first.data.predict.id);
    const { rows } = await owner.query('SELECT count(*)::int AS n FROM jobs WHERE idempotency_key = $1', [key]);
    expect(rows[0].n).toBe(1);
  });

  it('a job from before request fingerprints (NULL request_hash) matches any request with its key and service', async () => {
    const key = `k-legacy-${Date.now()}`;
    const first = await gql(PREDICT, echo({ message: 'old' }, { wait: 10, idempotencyKey: key }), a);
    await owner.query('UPDATE jobs SET request_hash = NULL WHERE id = $1', [first.data.predict.id]);
    const other = await gql(PREDICT, echo({ message: 'new' }, { wait: 10, idempotencyKey: key }), a);
    expect(other.errors).toBeUndefined();
    expect(other.data.predict).toMatchObject({ id: first.data.predict.id, output: { message: 'old' } });
    const clash = await gql(PREDICT, { input: { service: 'language.detect-language', input: { text: 'Guten Morgen, wie geht es dir heute?' }, idempotencyKey: key } }, a);
    expect(clash.errors?.[0]?.extensions?.code).toBe('CONFLICT');
  });

  it('a vision input is fingerprinted as sent, before its image is stored: the same image gets the job, another image is a CONFLICT', async () => {
    const t = await signUpTenant(cluster.api, 'Alpha images');
    const dir = join(cluster.api.env.DATA_DIR, 'artifacts', 'inputs', t.tenantId);
    const stored = () => { try { return readdirSync(dir).filter((f) => !f.endsWith('.tmp')).length; } catch { return 0; } };
    const image = (i: number) => readFileSync(join('node_modules/@vladmandic/face-api/demo', `sample${i}.jpg`)).toString('base64');
    const key = `img-${Date.now()}`;
    const predict = (i: number) => gql(PREDICT, { input: { service: 'vision.moderate', input: { image: image(i) }, wait: 0, idempotencyKey: key } }, t);
    const first = await predict(1);
    expect(first.errors).toBeUndefined();
    // Its result does not matter here: no model needs to run.
    await gql(CANCEL, { id: first.data.predict.id }, t);
    const repeat = await predict(1);
    expect(repeat.errors).toBeUndefined();
    expect(repeat.data.predict.id).toBe(first.data.predict.id);
    const refused = await predict(2);
    expect(refused.errors?.[0]?.extensions?.code).toBe('CONFLICT');
    expect(stored()).toBe(1); // the repeat's and the refused call's images are deleted at once
    const { rows } = await owner.query('SELECT count(*)::int AS n FROM jobs WHERE tenant_id = $1', [t.tenantId]);
    expect(rows[0].n).toBe(1);
  });

  it('answers a short job from its completion: the response is what a read gives afterwards, start time included', async () => {
    const res = await gql(PREDICT, echo({ message: 'quick' }, { wait: 10 }), a);
    expect(res.errors).toBeUndefined();
    const p = res.data.predict;
    expect(p).toMatchObject({ status: 'SUCCEEDED', output: { message: 'quick' }, attempt: 1 });
    // Started and ended in one write (its start event is held back for short jobs), yet both are recorded.
    expect(p.startedAt).not.toBeNull();
    expect(Date.parse(p.completedAt)).toBeGreaterThanOrEqual(Date.parse(p.startedAt));
    expect(Date.parse(p.startedAt)).toBeGreaterThanOrEqual(Date.parse(p.createdAt) - 5);
    const read = (await gql(PREDICTION, { id: p.id }, a)).data.prediction;
    expect(read).toMatchObject({ status: p.status, output: p.output, attempt: p.attempt, startedAt: p.startedAt, usage: p.usage, node: p.node });
    expect(p.usage.seconds).toBeGreaterThan(0);
    expect((await ledger(p.id)).map((r) => r.ms)).toEqual([Math.round(p.usage.seconds * 1000)]);
  });

  it('concurrent requests with one idempotency key make one job, beside other jobs inserted with them', async () => {
    const key = `burst-${Date.now()}`;
    // One request, its JSON keys in one order or the other.
    const same = Array.from({ length: 8 }, (_, i) =>
      gql(PREDICT, echo(i % 2 ? { message: 'burst', sleepMs: 1 } : { sleepMs: 1, message: 'burst' }, { wait: 10, idempotencyKey: key }), a));
    const others = Array.from({ length: 8 }, (_, i) => gql(PREDICT, echo({ message: `other-${i}` }, { wait: 10 }), a));
    // The same key for a different service, and for a different input, in the same batches: refused, and only those requests.
    const clash = gql(PREDICT, { input: { service: 'language.detect-language', input: { text: 'Guten Morgen, wie geht es dir heute?' }, idempotencyKey: key } }, a);
    const clashInput = gql(PREDICT, echo({ message: 'not the burst', sleepMs: 1 }, { wait: 10, idempotencyKey: key }), a);
    const [sameRes, otherRes, clashRes, clashInputRes] = await Promise.all([Promise.all(same), Promise.all(others), clash, clashInput]);
    const { rows } = await owner.query('SELECT id, service, input FROM jobs WHERE idempotency_key = $1', [key]);
    expect(rows).toHaveLength(1);
    expect(otherRes.map((r) => r.data.predict.output)).toEqual(others.map((_, i) => ({ message: `other-${i}` })));
    expect(new Set(otherRes.map((r) => r.data.predict.id)).size).toBe(8);
    // Whichever request won the key, every request like it gets its job and every other one is a CONFLICT.
    const [won] = rows;
    const winners = won.service !== 'system.echo' ? [clashRes] : won.input.message === 'burst' ? sameRes : [clashInputRes];
    const losers = [...sameRes, clashRes, clashInputRes].filter((r) => !winners.includes(r));
    expect(winners.map((r) => r.data?.predict?.id)).toEqual(winners.map(() => won.id));
    expect(losers.map((r) => r.errors?.[0]?.extensions?.code)).toEqual(losers.map(() => 'CONFLICT'));
    if (winners === sameRes) expect(sameRes.every((r) => r.data.predict.status === 'SUCCEEDED')).toBe(true);
  });

  it('cancels a running job within a couple of seconds; the node stops it and the time so far is billed once', async () => {
    const res = await gql(PREDICT, echo({ sleepMs: 30_000 }, { wait: 0 }), a);
    const id = res.data.predict.id;
    await waitFor(async () => (await gql(PREDICTION, { id }, a)).data.prediction.status === 'RUNNING', 10_000, 'RUNNING');
    const t0 = Date.now();
    const canceled = await gql(CANCEL, { id }, a);
    expect(canceled.data.cancelPrediction.status).toBe('CANCELED');
    await waitFor(async () => (await ledger(id)).length === 1, 5000, 'the node to report the canceled attempt');
    expect(Date.now() - t0).toBeLessThan(2500);
    const [row] = await ledger(id);
    expect(row.billable).toBe(true);
    expect(row.ms).toBeLessThan(10_000);
  });

  it('a cancellation whose pub/sub message was lost still reaches the running job, through the node\'s heartbeat', async () => {
    const res = await gql(PREDICT, echo({ sleepMs: 30_000 }, { wait: 0 }), a);
    const id = res.data.predict.id;
    await waitFor(async () => (await gql(PREDICTION, { id }, a)).data.prediction.status === 'RUNNING', 10_000, 'RUNNING');
    // What the API's cancel leaves in Redis, without its message: the canceled marker alone.
    await owner.query(`UPDATE jobs SET status = 'CANCELED', completed_at = now() WHERE id = $1`, [id]);
    await cluster.cp.cx.redis.set(keys(cluster.api.env.REDIS_PREFIX).canceled(id), '1', 'EX', 60);
    await waitFor(async () => (await ledger(id)).length === 1, 10_000, 'the node to stop the job and report its attempt');
    const [row] = await ledger(id);
    expect(row.ms).toBeLessThan(10_000); // stopped, not run to its 30 s end
  });

  it('refuses bad input with BAD_USER_INPUT naming the field', async () => {
    const cases: Array<[Record<string, unknown>, string]> = [
      [{ service: 'no.such', input: {} }, 'input.service'],
      [{ service: 'system.echo', deployment: 'x', input: {} }, 'input.service'],
      [{ input: {} }, 'input.service'],
      [{ service: 'system.echo', input: {}, wait: 600 }, 'input.wait'],
      [{ service: 'system.echo', input: { sleepMs: -1 } }, 'input.sleepMs'],
      [{ service: 'system.echo', input: { nope: 1 } }, 'input.nope'],
      [{ service: 'system.echo', input: {}, webhookUrl: 'ftp://x' }, 'input.webhookUrl'],
    ];
    for (const [input, field] of cases) {
      const res = await gql(PREDICT, { input }, a);
      expect({ input, code: res.errors?.[0]?.extensions?.code, field: res.errors?.[0]?.extensions?.field }).toEqual({ input, code: 'BAD_USER_INPUT', field });
    }
  });

  it('needs the PREDICT scope', async () => {
    const read = await createApiKey(cluster.api, a.token, ['READ']);
    expect((await gql(PREDICT, echo({}), read.secret)).errors![0].extensions!.code).toBe('FORBIDDEN');
    const predict = await createApiKey(cluster.api, a.token, ['PREDICT']);
    expect((await gql(PREDICT, echo({}, { wait: 10 }), predict.secret)).data.predict.status).toBe('SUCCEEDED');
  });
});

describe('tenant isolation of jobs', () => {
  it('another tenant\'s prediction is NOT_FOUND to read, cancel or list', async () => {
    const mine = (await gql(PREDICT, echo({ sleepMs: 10_000 }, { wait: 0 }), a)).data.predict.id;
    expect((await gql(PREDICTION, { id: mine }, b)).errors![0].extensions!.code).toBe('NOT_FOUND');
    expect((await gql(CANCEL, { id: mine }, b)).errors![0].extensions!.code).toBe('NOT_FOUND');
    const listed = (await gql(PREDICTIONS, { first: 100 }, b)).data.predictions.edges.map((e: any) => e.node.id);
    expect(listed).not.toContain(mine);
    expect((await gql(PREDICTION, { id: mine }, a)).data.prediction.status).not.toBe('CANCELED');
    await gql(CANCEL, { id: mine }, a);
  });
});

describe('ledger', () => {
  it('a duplicated completion message does not double the ledger or change the result', async () => {
    const p = (await gql(PREDICT, echo({ message: 'once' }, { wait: 10 }), a)).data.predict;
    const [row] = (await owner.query('SELECT node_id, attempt, started_at, ended_at, devices FROM usage_ledger WHERE job_id = $1', [p.id])).rows;
    const replay = {
      type: 'ended' as const, jobId: p.id, attempt: row.attempt, node: row.node_id, status: 'SUCCEEDED' as const, output: { message: 'tampered' },
      startedAt: +row.started_at, endedAt: +row.ended_at + 5000, devices: row.devices, hardware: 'CPU' as const,
    };
    await cluster.cp.recorder.handleBatch([replay, replay]);
    // and through the real stream, as a redelivered message would come
    await cluster.cp.cx.redis.xadd(cluster.cp.cx.keys.events, '*', 'e', JSON.stringify(replay));
    await new Promise((r) => setTimeout(r, 500));
    expect(await ledger(p.id)).toHaveLength(1);
    expect((await gql(PREDICTION, { id: p.id }, a)).data.prediction.output).toEqual({ message: 'once' });
  });
});

describe('node agent', () => {
  it('attempts admitted together for one node go as one dispatch message, and a second copy of a running attempt is not run again', async () => {
    const prefix = cluster.api.env.REDIS_PREFIX;
    // Idle in Postgres and in the admitter (a job canceled while running holds its device until its node's end is read).
    await waitFor(async () => (await owner.query(`SELECT count(*)::int AS n FROM jobs WHERE status IN ('QUEUED','ADMITTED','RUNNING')`)).rows[0].n === 0
      && cluster.cp.scheduler.usage().every((u) => u.used === 0), 20_000, 'an idle cluster');
    const ids = [randomUUID(), randomUUID()];
    // One statement: the reconciler, which adopts QUEUED jobs the admitter does not know, sees both or neither.
    await owner.query(
      `INSERT INTO jobs (id, tenant_id, kind, service, status, hardware, devices, input)
       SELECT id, $2, 'PREDICTION', 'system.echo', 'QUEUED', 'CPU', 1, jsonb_build_object('message', n - 1, 'sleepMs', 800)
         FROM unnest($1::uuid[]) WITH ORDINALITY AS t(id, n)`,
      [ids, a.tenantId],
    );
    const adds: Array<{ name: string; data: any }> = [];
    const originalAdd = Queue.prototype.add;
    Queue.prototype.add = function (this: Queue, name: string, data: unknown, opts?: unknown) {
      if (this.name === keys(prefix).nodeQueue('cpu-1')) adds.push({ name, data });
      return (originalAdd as (...args: unknown[]) => ReturnType<Queue['add']>).call(this, name, data, opts);
    } as Queue['add'];
    const ends = new Map<string, number>();
    const rec = cluster.cp.recorder as unknown as { handleBatch(events: Array<{ type: string; jobId: string }>): Promise<void> };
    const handleBatch = rec.handleBatch.bind(rec);
    rec.handleBatch = (events) => {
      for (const e of events) if (e.type === 'ended') ends.set(e.jobId, (ends.get(e.jobId) ?? 0) + 1);
      return handleBatch(events);
    };
    const queue = new Queue(keys(prefix).nodeQueue('cpu-1'), { connection: cluster.cp.cx.connect('test-dispatch-2'), prefix: bullPrefix(prefix) });
    try {
      // Both known to the admitter in the same tick: one round admits both onto the node's two devices.
      for (const id of ids) cluster.cp.scheduler.enqueue({ id, tenantId: a.tenantId, hardware: 'CPU', devices: 1, enqueuedAt: Date.now() });
      await waitFor(() => adds.length > 0, 5000, 'the dispatch');
      expect(adds).toHaveLength(1);
      expect(adds[0].name).toBe('batch');
      expect(adds[0].data.attempts.map((x: { jobId: string; attempt: number }) => [x.jobId, x.attempt]).sort())
        .toEqual(ids.map((id) => [id, 1]).sort());
      await waitFor(async () => (await owner.query(`SELECT count(*)::int AS n FROM jobs WHERE id = ANY($1) AND status = 'RUNNING'`, [ids])).rows[0].n === 2,
        5000, 'both running');
      // The same attempt again, alone (as the reconciler re-sends a dispatch): the node is running it.
      Queue.prototype.add = originalAdd;
      const copy = await queue.add('system.echo', adds[0].data.attempts[0], { jobId: `${adds[0].data.attempts[0].jobId}.1` });
      await waitFor(async () => (await copy.getState()) === 'completed', 5000, 'the copy to be taken');
      await waitFor(async () => (await owner.query(`SELECT count(*)::int AS n FROM jobs WHERE id = ANY($1) AND status = 'SUCCEEDED'`, [ids])).rows[0].n === 2,
        10_000, 'both SUCCEEDED');
      await new Promise((r) => setTimeout(r, 300));
      expect(Object.fromEntries(ends)).toEqual(Object.fromEntries(ids.map((id) => [id, 1])));
      for (const id of ids) expect(await ledger(id)).toEqual([{ attempt: 1, billable: true, ms: expect.any(Number), reason: null }]);
    } finally {
      Queue.prototype.add = originalAdd;
      rec.handleBatch = handleBatch;
      await queue.close();
    }
  });

  it('a dispatch of a job canceled while it waited on the node ends CANCELED, unstarted and unbilled, its result dropped', async () => {
    const prefix = cluster.api.env.REDIS_PREFIX;
    const id = randomUUID();
    // As the API leaves a job canceled after its dispatch was sent: CANCELED in Postgres, the marker in Redis.
    await owner.query(
      `INSERT INTO jobs (id, tenant_id, kind, service, status, hardware, devices, input, attempt, node_id, completed_at)
       VALUES ($1, $2, 'PREDICTION', 'system.echo', 'CANCELED', 'CPU', 1, '{}', 1, 'cpu-1', now())`, [id, a.tenantId],
    );
    await cluster.cp.cx.redis.set(keys(prefix).canceled(id), '1', 'EX', 60);
    const queue = new Queue(keys(prefix).nodeQueue('cpu-1'), { connection: cluster.cp.cx.connect('test-dispatch'), prefix: bullPrefix(prefix) });
    try {
      const job = await queue.add('system.echo', {
        jobId: id, tenantId: a.tenantId, attempt: 1, service: 'system.echo', input: { message: 'must not count', sleepMs: 300 },
        devices: 1, hardware: 'CPU', deadlineAt: null,
      }, { jobId: `${id}.1` });
      await waitFor(async () => (await job.getState()) === 'completed', 10_000, 'the node to process the dispatch');
      await new Promise((r) => setTimeout(r, 500)); // its ended event through the recorder
      expect(await ledger(id)).toEqual([]);
      const { rows: [row] } = await owner.query('SELECT status, output, started_at FROM jobs WHERE id = $1', [id]);
      expect(row).toEqual({ status: 'CANCELED', output: null, started_at: null });
    } finally {
      await queue.close();
    }
  });
});

describe('recorder faults', () => {
  it('a batch of ends whose write fails is written again before later events: every job ends once, one ledger row each', async () => {
    const pool = cluster.cp.cx.durablePool.pool as unknown as { query: (...args: any[]) => Promise<unknown> };
    const query = pool.query.bind(pool);
    let failures = 0;
    pool.query = (config: { name?: string }, ...rest: unknown[]) => {
      if (config?.name?.startsWith('recorder.ended') && failures < 2) {
        failures++;
        return Promise.reject(new Error('connection terminated unexpectedly'));
      }
      return query(config, ...rest);
    };
    try {
      const ids = await Promise.all(Array.from({ length: 5 }, async (_, i) => (await gql(PREDICT, echo({ message: i }, { wait: 0 }), a)).data.predict.id as string));
      await waitFor(async () => {
        const { rows } = await owner.query(`SELECT count(*)::int AS n FROM jobs WHERE id = ANY($1::uuid[]) AND status = 'SUCCEEDED'`, [ids]);
        return rows[0].n === ids.length;
      }, 20_000, 'all jobs SUCCEEDED after the failed writes');
      expect(failures).toBe(2);
      for (const [i, id] of ids.entries()) {
        expect(await ledger(id)).toEqual([{ attempt: 1, billable: true, ms: expect.any(Number), reason: null }]);
        expect((await gql(PREDICTION, { id }, a)).data.prediction.output).toEqual({ message: i });
      }
    } finally {
      pool.query = query;
    }
  });

  it('ends another control plane took off the stream and never acknowledged (it crashed) are recorded by this one', async () => {
    const p = (await gql(PREDICT, echo({ message: 'real', sleepMs: 3000 }, { wait: 0 }), a)).data.predict;
    await waitFor(async () => (await owner.query(`SELECT 1 FROM jobs WHERE id = $1 AND status = 'RUNNING'`, [p.id])).rowCount === 1, 10_000, 'RUNNING');
    const k = keys(cluster.api.env.REDIS_PREFIX);
    const redis = cluster.cp.cx.redis;
    await cluster.cp.recorder.stop();
    try {
      // The node's end, taken by a recorder that then died before its commit.
      const now = Date.now();
      const end = { type: 'ended', jobId: p.id, attempt: 1, node: 'cpu-1', status: 'SUCCEEDED', startedAt: now - 40, endedAt: now, devices: 1, hardware: 'CPU', output: { message: 'taken' }, durationMs: 40 };
      await redis.xadd(k.events, '*', 'e', JSON.stringify(end));
      const taken = (await redis.xreadgroup('GROUP', 'control-plane', 'cp-crashed', 'COUNT', 100, 'STREAMS', k.events, '>')) as Array<[string, unknown[]]>;
      expect(taken[0][1].length).toBeGreaterThanOrEqual(1);
    } finally {
      await cluster.cp.recorder.start();
    }
    await waitFor(async () => (await owner.query(`SELECT 1 FROM jobs WHERE id = $1 AND status = 'SUCCEEDED'`, [p.id])).rowCount === 1, 10_000, 'the taken end recorded');
    expect((await gql(PREDICTION, { id: p.id }, a)).data.prediction.output).toEqual({ message: 'taken' });
    expect(await ledger(p.id)).toEqual([{ attempt: 1, billable: true, ms: 40, reason: null }]);
    // The node's own end, later, changes nothing.
    await new Promise((r) => setTimeout(r, 3500));
    expect(await ledger(p.id)).toEqual([{ attempt: 1, billable: true, ms: 40, reason: null }]);
    expect((await gql(PREDICTION, { id: p.id }, a)).data.prediction.output).toEqual({ message: 'taken' });
  });
});

describe('lost announcements', () => {
  it('a waiting predict whose terminal update was lost in pub/sub reads the job again and answers, long before its wait is over', async () => {
    const key = `lost-${Date.now()}`;
    const waiting = gql(PREDICT, echo({ sleepMs: 30_000 }, { wait: 60, idempotencyKey: key }), a);
    await waitFor(async () => (await owner.query(`SELECT 1 FROM jobs WHERE idempotency_key = $1 AND status = 'RUNNING'`, [key])).rowCount === 1, 10_000, 'RUNNING');
    // Ended behind pub/sub's back, as if the announcement had been published while the API reconnected.
    const { rows: [job] } = await owner.query(`UPDATE jobs SET status = 'CANCELED', completed_at = now() WHERE idempotency_key = $1 RETURNING id`, [key]);
    const res = await waiting; // without the re-read this waits 60 s, past the test's timeout
    expect(res.data.predict).toMatchObject({ id: job.id, status: 'CANCELED' });
    await cluster.cp.cx.redis.publish(keys(cluster.api.env.REDIS_PREFIX).cancel, JSON.stringify({ jobId: job.id }));
  }, 20_000);

  it('a control plane in the API\'s process answers its waiters itself: with the API\'s pub/sub cut, a wait ends with its job', async () => {
    const subscriber = (cluster.api.app.bus as unknown as { subscriber: import('ioredis').Redis }).subscriber;
    // The job's SUBSCRIBE is confirmed but never sent: nothing comes to this process over Redis.
    const cut = jest.spyOn(subscriber, 'subscribe').mockImplementation((async () => 1) as never);
    try {
      const res = await gql(PREDICT, echo({ message: 'handed over' }, { wait: 30 }), a);
      expect(res.data.predict).toMatchObject({ status: 'SUCCEEDED', output: { message: 'handed over' } });
      expect(cut).toHaveBeenCalled();
    } finally {
      cut.mockRestore();
    }
    // Without the in-process handoff this waits for the re-read, 5 s later: past this test's timeout.
  }, 4_000);
});

describe('subscriptions', () => {
  it('a terminal update lost in pub/sub does not hang a subscription: it reads the job again when idle', async () => {
    const jobs = cluster.api.app.services.jobs;
    const principal = await cluster.api.app.services.tenancy.authenticate(a.token);
    const p = (await gql(PREDICT, echo({ sleepMs: 30_000 }, { wait: 0 }), a)).data.predict;
    const abort = new AbortController();
    const seen: string[] = [];
    const consumed = (async () => {
      for await (const v of jobs.updates({ principal }, p.id, 'PREDICTION', abort.signal, 200)) seen.push(v.status);
    })();
    await waitFor(() => seen.length > 0, 5_000, 'the first view');
    // Ended behind pub/sub's back, as if the announcement had been published while the API reconnected.
    await owner.query(`UPDATE jobs SET status = 'CANCELED', completed_at = now() WHERE id = $1`, [p.id]);
    await Promise.race([consumed, new Promise((_, rej) => setTimeout(() => rej(new Error('subscription still open')), 5_000))]);
    abort.abort();
    expect(seen[0]).not.toBe('CANCELED');
    expect(seen[seen.length - 1]).toBe('CANCELED');
    // The node stops the sleeper (the row is already terminal, so the API would not tell it).
    await cluster.cp.cx.redis.publish(keys(cluster.api.env.REDIS_PREFIX).cancel, JSON.stringify({ jobId: p.id }));
  });

  it('pushes updates of a prediction until it ends, and refuses a connection without credentials', async () => {
    const url = cluster.api.server.url.replace('http', 'ws');
    const client = createClient({ url, webSocketImpl: WebSocket, connectionParams: { authorization: `Bearer ${a.token}` }, retryAttempts: 0 });
    const id = (await gql(PREDICT, echo({ sleepMs: 600, progressSteps: 3 }, { wait: 0 }), a)).data.predict.id;
    const statuses: string[] = [];
    await new Promise<void>((resolve, reject) => {
      client.subscribe({ query: `subscription($id: ID!) { predictionUpdated(id: $id) { id status progress output } }`, variables: { id } }, {
        next: (v: any) => statuses.push(v.data.predictionUpdated.status),
        error: reject, complete: resolve,
      });
    });
    await client.dispose();
    expect(statuses.at(-1)).toBe('SUCCEEDED');
    expect(statuses.length).toBeGreaterThanOrEqual(2);

    // Another tenant's prediction: NOT_FOUND with the contract's code, as over HTTP.
    const spy = createClient({ url, webSocketImpl: WebSocket, connectionParams: { authorization: `Bearer ${b.token}` }, retryAttempts: 0 });
    const crossErr = await new Promise<any>((resolve) => {
      spy.subscribe({ query: `subscription($id: ID!) { predictionUpdated(id: $id) { id } }`, variables: { id } }, {
        next: (v: any) => resolve(v.errors ?? v), error: resolve, complete: () => resolve(null),
      });
    });
    await spy.dispose();
    expect(crossErr?.[0]?.extensions?.code).toBe('NOT_FOUND');

    const anon = createClient({ url, webSocketImpl: WebSocket, retryAttempts: 0 });
    const err = await new Promise<unknown>((resolve) => {
      anon.subscribe({ query: `subscription($id: ID!) { predictionUpdated(id: $id) { id } }`, variables: { id } }, { next: () => undefined, error: resolve, complete: () => resolve(null) });
    });
    expect(err).not.toBeNull();
    await anon.dispose();
  });
});

/** nimbus_webhook_attempts_total for one outcome, from the control plane's registry. */
async function attempts(outcome: string): Promise<number> {
  const { values } = await cluster.api.app.metrics.registry.getSingleMetric('nimbus_webhook_attempts_total')!.get();
  return values.find((v) => v.labels.outcome === outcome)?.value ?? 0;
}

describe('webhooks', () => {
  let hooks: WebhookReceiver;
  let received: Received[];
  beforeAll(async () => {
    hooks = await startWebhookReceiver();
    received = hooks.received;
  });
  afterAll(() => hooks.close());

  it('POSTs the terminal job signed per Standard Webhooks, retries with the same webhook-id, and records every attempt', async () => {
    const before = { delivered: await attempts('delivered'), failed: await attempts('failed') };
    hooks.failNext(1);
    const url = hooks.url();
    const p = (await gql(PREDICT, echo({ message: 'hooked' }, { wait: 10, webhookUrl: url }), a)).data.predict;
    await waitFor(() => received.length >= 2, 10_000, 'webhook retry');
    const [first, second] = received;
    expect(first.headers['webhook-id']).toBe(second.headers['webhook-id']);
    const { rows: [t] } = await owner.query('SELECT webhook_secret FROM tenants WHERE id = $1', [a.tenantId]);
    const h = second.headers as Record<string, string>;
    expect(verifyWebhookSignature(t.webhook_secret, h, second.body)).toBe(true);
    expect(verifyWebhookSignature(t.webhook_secret, h, second.body.replace('hooked', 'forged'))).toBe(false);
    const event = JSON.parse(second.body);
    expect(event).toMatchObject({ type: 'prediction.succeeded', data: { id: p.id, status: 'SUCCEEDED', output: { message: 'hooked' } } });
    await waitFor(async () => (await owner.query('SELECT 1 FROM webhook_deliveries WHERE job_id = $1 AND delivered', [p.id])).rowCount === 1, 5000, 'delivery record');
    const { rows } = await owner.query('SELECT attempt, status_code, delivered FROM webhook_deliveries WHERE job_id = $1 ORDER BY attempt', [p.id]);
    expect(rows).toEqual([{ attempt: 1, status_code: 500, delivered: false }, { attempt: 2, status_code: 204, delivered: true }]);
    // The retry waited the schedule's first step: 5 units of webhookBackoffMs (100 ms here), ±10%.
    const { rows: [gap] } = await owner.query(
      `SELECT extract(epoch FROM max(created_at) - min(created_at)) * 1000 AS ms FROM webhook_deliveries WHERE job_id = $1`, [p.id]);
    expect(Number(gap.ms)).toBeGreaterThanOrEqual(400);
    // Counted in the metrics: one failed attempt, one delivered; nothing left pending.
    expect({ delivered: await attempts('delivered') - before.delivered, failed: await attempts('failed') - before.failed }).toEqual({ delivered: 1, failed: 1 });
    const metricsText = await cluster.api.app.metrics.registry.metrics();
    expect(metricsText).toMatch(/^nimbus_webhooks_pending\{state="delayed"\} 0$/m);

    // Listable by the tenant, newest first, per job and across jobs; another tenant sees none of them.
    const DELIVERIES = `query($jobId: ID, $first: Int, $after: String) { webhookDeliveries(jobId: $jobId, first: $first, after: $after) {
      edges { node { jobId webhookId eventType url attempt statusCode error delivered } } pageInfo { hasNextPage endCursor } } }`;
    const mine = (await gql(DELIVERIES, { jobId: p.id }, a)).data.webhookDeliveries;
    expect(mine.edges.map((e: any) => e.node)).toEqual([
      { jobId: p.id, webhookId: first.headers['webhook-id'], eventType: 'prediction.succeeded', url, attempt: 2, statusCode: 204, error: null, delivered: true },
      { jobId: p.id, webhookId: first.headers['webhook-id'], eventType: 'prediction.succeeded', url, attempt: 1, statusCode: 500, error: 'HTTP 500', delivered: false },
    ]);
    const page1 = (await gql(DELIVERIES, { first: 1 }, a)).data.webhookDeliveries;
    expect(page1.edges).toHaveLength(1);
    expect(page1.pageInfo.hasNextPage).toBe(true);
    const page2 = (await gql(DELIVERIES, { first: 1, after: page1.pageInfo.endCursor }, a)).data.webhookDeliveries;
    expect(page2.edges[0].node.attempt).toBe(1);
    expect((await gql(DELIVERIES, { jobId: p.id }, b)).data.webhookDeliveries.edges).toEqual([]);
    expect((await gql(DELIVERIES, {}, b)).data.webhookDeliveries.edges).toEqual([]);
    expect((await gql(DELIVERIES, { jobId: 'nope' }, a)).errors?.[0]?.extensions?.code).toBe('NOT_FOUND');
  });

  it('still sends the terminal webhook when the control plane fails between recording the end and announcing it', async () => {
    received.length = 0;
    const url = hooks.url();
    const announcer = cluster.cp.announcer;
    const announceMany = announcer.announceMany.bind(announcer);
    let failures = 0;
    // As if the control plane died (or Redis failed) right after the end's commit: the recorder
    // has not acknowledged the event, so it reads it again; the end is committed already.
    announcer.announceMany = async (rows, event, opts) => {
      if (failures === 0 && rows.some((r) => r.webhook_url === url && r.status === 'SUCCEEDED')) {
        failures++;
        throw new Error('Connection is closed (injected)');
      }
      return announceMany(rows, event, opts);
    };
    try {
      const id = (await gql(PREDICT, echo({ message: 'announced late' }, { wait: 0, webhookUrl: url }), a)).data.predict.id;
      await waitFor(() => received.some((r) => JSON.parse(r.body).data.id === id), 10_000, 'the terminal webhook');
      expect(failures).toBe(1);
      const events = received.map((r) => JSON.parse(r.body)).filter((e) => e.data.id === id);
      expect(events).toEqual([expect.objectContaining({ type: 'prediction.succeeded', data: expect.objectContaining({ status: 'SUCCEEDED', output: { message: 'announced late' } }) })]);
      expect((await ledger(id)).filter((r) => r.billable)).toHaveLength(1);
    } finally {
      announcer.announceMany = announceMany;
    }
  });

  it('sends the STARTED event of a job that ended before its start was recorded, before the terminal one', async () => {
    received.length = 0;
    const url = hooks.url();
    const p = (await gql(PREDICT, echo({ message: 'fast' }, { wait: 10, webhookUrl: url, webhookEvents: ['STARTED'] }), a)).data.predict;
    expect(p.status).toBe('SUCCEEDED');
    await waitFor(() => received.length >= 2, 10_000, 'two webhooks');
    const types = received.map((r) => JSON.parse(r.body)).filter((e) => e.data.id === p.id).map((e) => e.type).sort();
    expect(types).toEqual(['prediction.started', 'prediction.succeeded']);
  });

  it('resends a job\'s terminal webhook on request, with its original webhook-id; only for the job\'s tenant and admins', async () => {
    const url = hooks.url();
    const RESEND = `mutation($jobId: ID!) { resendWebhook(jobId: $jobId) { webhookId eventType url } }`;
    const p = (await gql(PREDICT, echo({ message: 'again' }, { wait: 10, webhookUrl: url }), a)).data.predict;
    const mine = () => received.filter((r) => JSON.parse(r.body).data.id === p.id);
    await waitFor(() => mine().length === 1, 10_000, 'the first delivery');
    const res = (await gql(RESEND, { jobId: p.id }, a)).data.resendWebhook;
    expect(res).toEqual({ webhookId: mine()[0].headers['webhook-id'], eventType: 'prediction.succeeded', url });
    await waitFor(() => mine().length === 2, 10_000, 'the resend');
    const [first, again] = mine();
    expect(again.headers['webhook-id']).toBe(first.headers['webhook-id']);
    expect(JSON.parse(again.body)).toMatchObject({ type: 'prediction.succeeded', data: { id: p.id, output: { message: 'again' } } });
    await waitFor(async () => (await owner.query('SELECT 1 FROM webhook_deliveries WHERE job_id = $1 AND delivered', [p.id])).rowCount === 2, 5000, 'both recorded');
    expect((await owner.query(`SELECT data FROM audit_events WHERE action = 'webhooks.resent' AND object_id = $1`, [p.id])).rows)
      .toEqual([{ data: { eventType: 'prediction.succeeded' } }]);

    const code = (r: any) => r.errors?.[0]?.extensions?.code;
    expect(code(await gql(RESEND, { jobId: p.id }, b))).toBe('NOT_FOUND');
    const predictOnly = await createApiKey(cluster.api, a.token, ['PREDICT', 'READ']);
    expect(code(await gql(RESEND, { jobId: p.id }, predictOnly.secret))).toBe('FORBIDDEN');
    const plain = (await gql(PREDICT, echo({ message: 'no hook' }, { wait: 10 }), a)).data.predict;
    expect(await gql(RESEND, { jobId: plain.id }, a)).toMatchObject({ errors: [{ extensions: { code: 'BAD_USER_INPUT', field: 'jobId' } }] });
    const running = (await gql(PREDICT, echo({ sleepMs: 3000 }, { wait: 0, webhookUrl: url }), a)).data.predict;
    expect((await gql(RESEND, { jobId: running.id }, a)).errors?.[0]?.message).toMatch(/has not ended/);
    await gql(CANCEL, { id: running.id }, a);
  });

  it('after a start, sweeps back an hour for jobs whose terminal webhook was never sent', async () => {
    const url = hooks.url();
    // Ended 20 and 50 minutes ago with a webhook URL, announcements lost (a crash before announcing, say).
    const ended = async (minutesAgo: number) => (await owner.query(
      `INSERT INTO jobs (tenant_id, kind, service, status, hardware, devices, attempt, webhook_url, created_at, started_at, completed_at, output)
       VALUES ($1, 'PREDICTION', 'system.echo', 'SUCCEEDED', 'CPU', 1, 1, $2, now() - make_interval(mins => $3 + 1),
               now() - make_interval(mins => $3 + 1), now() - make_interval(mins => $3), '{"message":"late"}') RETURNING id`,
      [a.tenantId, url, minutesAgo])).rows[0].id as string;
    const ids = [await ended(20), await ended(50)];
    // As a control plane that has just started: its sweep looks back webhookSweepLookbackMs (1 h) in
    // 5-minute windows. The reconciler's own ticks are paused meanwhile, so that a sweep already in
    // flight cannot set its window back over the reset.
    const reconciler = cluster.cp.reconciler;
    const state = reconciler as unknown as { busy: boolean; webhookSweepFrom: Date | null; nextWebhookSweepAt: number };
    reconciler.stop();
    try {
      await waitFor(() => !state.busy, 10_000, 'the tick in flight');
      state.webhookSweepFrom = null;
      state.nextWebhookSweepAt = 0;
      await waitFor(async () => {
        await reconciler.tick();
        return ids.every((id) => received.some((r) => JSON.parse(r.body).data.id === id));
      }, 15_000, 'both late webhooks');
    } finally {
      reconciler.start();
    }
    for (const id of ids) {
      const hooks = received.filter((r) => JSON.parse(r.body).data.id === id);
      expect(hooks.map((h) => JSON.parse(h.body).type)).toEqual(['prediction.succeeded']);
    }
  });

  it('deletes delivery attempts after their retention (30 days) and keeps younger ones', async () => {
    const p = (await gql(PREDICT, echo({ message: 'old deliveries' }, { wait: 10 }), a)).data.predict;
    const insert = (age: string) => owner.query(
      `INSERT INTO webhook_deliveries (tenant_id, job_id, webhook_id, event_type, url, attempt, status_code, delivered, created_at)
       VALUES ($1, $2, $3, 'prediction.succeeded', 'https://x.example.test/', 1, 204, true, now() - $4::interval) RETURNING id`,
      [a.tenantId, p.id, `msg_${age}`, age]).then((r) => r.rows[0].id as string);
    const old = await insert('31 days');
    const young = await insert('29 days');
    await waitFor(async () => (await owner.query('SELECT 1 FROM webhook_deliveries WHERE id = $1', [old])).rowCount === 0, 5000, 'the old attempt deleted');
    expect((await owner.query('SELECT 1 FROM webhook_deliveries WHERE id = $1', [young])).rowCount).toBe(1);
  });

  it('sends the webhook of a queued job cancelled while its message to the control plane is lost', async () => {
    const url = hooks.url();
    // Both devices of the node busy, so the next job waits QUEUED.
    const busy = await Promise.all([1, 2].map(async () => (await gql(PREDICT, echo({ sleepMs: 5000 }, { wait: 0 }), a)).data.predict.id as string));
    await waitFor(async () => (await owner.query(`SELECT count(*)::int AS n FROM jobs WHERE id = ANY($1) AND status IN ('ADMITTED','RUNNING')`, [busy])).rows[0].n === 2, 10_000, 'both devices busy');
    const queued = (await gql(PREDICT, echo({ message: 'never runs' }, { wait: 0, webhookUrl: url }), a)).data.predict;
    expect(queued.status).toBe('QUEUED');
    // The cancel commits, then everything it tells Redis (marker, node message, admission stream) fails.
    const redis = cluster.api.app.redis;
    const multi = jest.spyOn(redis, 'multi').mockImplementationOnce(() => {
      const failing = { set: () => failing, publish: () => failing, xadd: () => failing, exec: () => Promise.reject(new Error('injected: Redis unreachable')) };
      return failing as unknown as ReturnType<typeof redis.multi>;
    });
    try {
      expect((await gql(CANCEL, { id: queued.id }, a)).data.cancelPrediction.status).toBe('CANCELED');
      expect(multi).toHaveBeenCalledTimes(1);
    } finally {
      multi.mockRestore();
    }
    let hook: { type: string; data: { id: string; status: string; error: { code: string } } } | undefined;
    await waitFor(() => !!(hook = received.map((r) => JSON.parse(r.body)).find((e) => e.data.id === queued.id)), 10_000, 'the cancel webhook');
    expect(hook).toMatchObject({ type: 'prediction.canceled', data: { status: 'CANCELED', error: { code: 'CANCELED' } } });
    await waitFor(async () => (await owner.query('SELECT 1 FROM webhook_deliveries WHERE job_id = $1 AND delivered', [queued.id])).rowCount === 1, 5000, 'its delivery record');
    // Sent once: the sweep does not enqueue what has been attempted.
    await new Promise((r) => setTimeout(r, 1500));
    expect(received.filter((r) => JSON.parse(r.body).data.id === queued.id)).toHaveLength(1);
    // It never ran.
    expect(await ledger(queued.id)).toEqual([]);
    for (const id of busy) await gql(CANCEL, { id }, a);
  });
});
