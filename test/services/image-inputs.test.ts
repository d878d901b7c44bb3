import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Client } from 'pg';
import { createArtifactStore, type ArtifactStore } from '../../src/modules/training/artifact-store';
import { signUpTenant, type TestTenant } from '../support/api';
import { startCluster, waitFor, type TestCluster } from '../support/cluster';
import { ownerClient } from '../support/db';
import { CANCEL } from '../support/gql';

/**
 * Vision inputs' image bytes stay out of Postgres and BullMQ: the API stores them in the artifact
 * store under the tenant's namespace, the job's input holds a reference, the node agent loads the
 * bytes before inference, and retention deletes the object with the job's input.
 */

const PREDICT = `mutation Predict($input: PredictInput!) {
  predict(input: $input) { id service status output error { code message } }
}`;
const PREDICTION = `query Prediction($id: ID!) { prediction(id: $id) { id status output error { code message } } }`;

let cluster: TestCluster;
let owner: Client;
let store: ArtifactStore;
let a: TestTenant;
let b: TestTenant;

beforeAll(async () => {
  cluster = await startCluster({ agents: [{ name: 'img-1', devices: 2 }] });
  owner = await ownerClient();
  // The same store (DATA_DIR) the API, the control plane and the agent were given.
  store = createArtifactStore(cluster.api.env);
  a = await signUpTenant(cluster.api, 'Images A');
  b = await signUpTenant(cluster.api, 'Images B');
}, 60_000);
afterAll(async () => {
  await owner?.end();
  await cluster?.close();
});

const sampleBytes = (i: number) => readFileSync(join('node_modules/@vladmandic/face-api/demo', `sample${i}.jpg`));
const sample = (i: number) => sampleBytes(i).toString('base64');
const gql = (t: TestTenant, q: string, v: Record<string, unknown> = {}) => cluster.api.gql(q, v, t.token);
const jobInput = async (id: string) => (await owner.query('SELECT input FROM jobs WHERE id = $1', [id])).rows[0]?.input as any;
const jobCount = async (t: TestTenant) => (await owner.query('SELECT count(*)::int AS n FROM jobs WHERE tenant_id = $1', [t.tenantId])).rows[0].n as number;

async function moderate(t: TestTenant, image: string) {
  const res = await gql(t, PREDICT, { input: { service: 'vision.moderate', input: { image }, wait: 60 } });
  expect(res.errors).toBeUndefined();
  expect({ status: res.data.predict.status, error: res.data.predict.error }).toEqual({ status: 'SUCCEEDED', error: null });
  return res.data.predict as { id: string; output: { flagged: boolean; labels: Array<{ label: string }> } };
}

describe('a vision prediction', () => {
  it('keeps the image out of the job row: the input holds a reference to the stored bytes', async () => {
    const p = await moderate(a, sample(1));
    expect(p.output.labels[0]?.label).toBe('neutral');
    const input = await jobInput(p.id);
    expect(input).toEqual({
      image: { ref: expect.stringMatching(new RegExp(`^inputs/${a.tenantId}/[0-9a-f-]{36}$`)), mediaType: 'image/jpeg', width: 1920, height: 1280, bytes: 144516 },
    });
    // No base64 anywhere in the row: the whole input is a few hundred bytes for a 144 kB photo.
    expect(JSON.stringify(input).length).toBeLessThan(300);
    expect(JSON.stringify(input)).not.toContain(sample(1).slice(0, 64));
    expect((await store.get(input.image.ref)).equals(sampleBytes(1))).toBe(true);
  });

  it('gets a fresh reference per call, even for the same image', async () => {
    const [p1, p2] = [await moderate(a, sample(4)), await moderate(a, sample(4))];
    const [r1, r2] = [(await jobInput(p1.id)).image.ref, (await jobInput(p2.id)).image.ref];
    expect(r1).not.toBe(r2);
    expect([await store.exists(r1), await store.exists(r2)]).toEqual([true, true]);
  });
});

describe('retention', () => {
  it('deletes the stored image with the input and output of an expired job, and nothing else', async () => {
    const expired = await moderate(a, sample(2));
    const kept = await moderate(a, sample(2));
    const expiredRef = (await jobInput(expired.id)).image.ref as string;
    const keptRef = (await jobInput(kept.id)).image.ref as string;
    expect([await store.exists(expiredRef), await store.exists(keptRef)]).toEqual([true, true]);

    await owner.query(`UPDATE jobs SET data_expires_at = now() - interval '1 second' WHERE id = $1`, [expired.id]);
    await waitFor(async () => !(await store.exists(expiredRef)), 15_000, 'the expired input image to be deleted');
    const { rows: [row] } = await owner.query('SELECT input, output, data_expires_at, status FROM jobs WHERE id = $1', [expired.id]);
    expect(row).toEqual({ input: null, output: null, data_expires_at: null, status: 'SUCCEEDED' });

    // The other job, whose retention has not passed, keeps its input and image.
    expect((await jobInput(kept.id)).image.ref).toBe(keptRef);
    expect(await store.exists(keptRef)).toBe(true);
  });
});

describe('images no job will read', () => {
  it('are deleted at once: an idempotent repeat\'s, and a refused call\'s (a key reused for another service)', async () => {
    const t = await signUpTenant(cluster.api, 'Images C');
    const root = (store as unknown as { root: string }).root;
    const stored = () => { try { return readdirSync(join(root, 'inputs', t.tenantId)).filter((f) => !f.endsWith('.tmp')).length; } catch { return 0; } };
    const key = `img-${Date.now()}`;
    const first = await gql(t, PREDICT, { input: { service: 'vision.moderate', input: { image: sample(1) }, wait: 60, idempotencyKey: key } });
    expect(first.data.predict.status).toBe('SUCCEEDED');
    expect(stored()).toBe(1);
    const repeat = await gql(t, PREDICT, { input: { service: 'vision.moderate', input: { image: sample(1) }, wait: 60, idempotencyKey: key } });
    expect(repeat.data.predict.id).toBe(first.data.predict.id);
    const refused = await gql(t, PREDICT, { input: { service: 'vision.faces', input: { image: sample(1) }, wait: 60, idempotencyKey: key } });
    expect(refused.errors?.[0]?.extensions?.code).toBe('CONFLICT');
    expect(stored()).toBe(1); // only the job's own image is left
    expect(await store.exists((await jobInput(first.data.predict.id)).image.ref)).toBe(true);
  });
});

describe('retention of jobs ended without running', () => {
  it('a canceled job gets an expiry too: its input and stored image are deleted after the retention period', async () => {
    // wait 0 and cancel at once: the job ends CANCELED by the API, not through the recorder.
    const res = await gql(a, PREDICT, { input: { service: 'vision.moderate', input: { image: sample(3) }, wait: 0 } });
    const id = res.data.predict.id as string;
    await gql(a, CANCEL, { id });
    const ref = (await jobInput(id)).image.ref as string;
    expect(await store.exists(ref)).toBe(true);
    // The reconciler gives it completed_at + retention (an hour by default)...
    await waitFor(async () => (await owner.query('SELECT data_expires_at FROM jobs WHERE id = $1', [id])).rows[0].data_expires_at !== null, 10_000, 'an expiry');
    const { rows: [row] } = await owner.query(`SELECT status, extract(epoch FROM data_expires_at - completed_at)::int AS secs FROM jobs WHERE id = $1`, [id]);
    expect(row).toEqual({ status: 'CANCELED', secs: 3600 });
    // ...and once that has passed, deletes the input and the image as for any job.
    await owner.query(`UPDATE jobs SET data_expires_at = now() - interval '1 second' WHERE id = $1`, [id]);
    await waitFor(async () => !(await store.exists(ref)), 15_000, 'the canceled job\'s image to be deleted');
    expect(await jobInput(id)).toBeNull();
  });
});

describe('tenant isolation', () => {
  it('refuses a client-supplied reference with BAD_USER_INPUT, even to an object that exists', async () => {
    const theirs = await moderate(b, sample(1));
    const ref = (await jobInput(theirs.id)).image as Record<string, unknown>;
    expect(ref.ref).toMatch(new RegExp(`^inputs/${b.tenantId}/`));
    const before = await jobCount(a);
    const forged: unknown[] = [
      ref, // B's reference, verbatim
      { ref: ref.ref },
      ref.ref, // the key as the image string
      `artifact://${String(ref.ref)}`,
      { base64: sample(1), mediaType: 'image/jpeg', width: 1920, height: 1280 },
    ];
    for (const image of forged) {
      const res = await gql(a, PREDICT, { input: { service: 'vision.moderate', input: { image }, wait: 5 } });
      const label = JSON.stringify(image).slice(0, 80);
      expect({ label, data: res.data?.predict ?? null, code: res.errors?.[0]?.extensions?.code, field: res.errors?.[0]?.extensions?.field })
        .toEqual({ label, data: null, code: 'BAD_USER_INPUT', field: 'input.image' });
    }
    expect(await jobCount(a)).toBe(before);
    // B's object is untouched and still B's.
    expect((await store.get(String(ref.ref))).equals(sampleBytes(1))).toBe(true);
  });
});

describe('a stored image gone before the job runs', () => {
  it('ends the job FAILED with INPUT_EXPIRED, and the node keeps serving', async () => {
    // Fill the node's two slots so the vision call has to wait in the queue.
    const blockers: string[] = [];
    for (let i = 0; i < 2; i++) {
      const res = await gql(a, PREDICT, { input: { service: 'system.echo', input: { sleepMs: 30_000 }, wait: 0 } });
      blockers.push(res.data.predict.id);
    }
    await waitFor(async () => {
      const statuses = await Promise.all(blockers.map(async (id) => (await gql(a, PREDICTION, { id })).data.prediction.status));
      return statuses.every((s) => s === 'RUNNING');
    }, 15_000, 'both echo jobs to run');

    const res = await gql(a, PREDICT, { input: { service: 'vision.moderate', input: { image: sample(3) }, wait: 0 } });
    expect(res.errors).toBeUndefined();
    const id = res.data.predict.id as string;
    expect(res.data.predict.status).toBe('QUEUED');
    const ref = (await jobInput(id)).image.ref as string;
    await store.delete(ref);
    expect(await store.exists(ref)).toBe(false);

    for (const blocker of blockers) expect((await gql(a, CANCEL, { id: blocker })).data.cancelPrediction.status).toBe('CANCELED');
    let done: any;
    await waitFor(async () => {
      done = (await gql(a, PREDICTION, { id })).data.prediction;
      return ['SUCCEEDED', 'FAILED', 'CANCELED'].includes(done.status);
    }, 40_000, 'the vision job to end').catch(async (err: Error) => {
      // Say where it stood (a slow machine, a node declared lost, ...).
      const { rows } = await owner.query('SELECT id, status, attempt, node_id, error FROM jobs WHERE id = ANY($1::uuid[])', [[id, ...blockers]]);
      throw new Error(`${err.message}: ${JSON.stringify(rows)}`);
    });
    expect(done).toMatchObject({ status: 'FAILED', output: null, error: { code: 'INPUT_EXPIRED', message: expect.stringMatching(/no longer stored/) } });
    const { rows: [row] } = await owner.query('SELECT node_id, attempt FROM jobs WHERE id = $1', [id]);
    expect(row).toEqual({ node_id: 'img-1', attempt: 1 }); // it did reach the node
    // Nothing ran on the node's devices for it: no ledger row, nothing billed.
    expect((await owner.query('SELECT count(*)::int AS n FROM usage_ledger WHERE job_id = $1', [id])).rows[0].n).toBe(0);

    // The agent did not crash: same process, and it serves the next call.
    expect(cluster.agents.get('img-1')?.exitCode).toBeNull();
    const after = await moderate(a, sample(1));
    expect(after.output.labels[0]?.label).toBe('neutral');
  }, 90_000);
});
