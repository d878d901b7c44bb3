/**
 * The SDK against the real system: API + control plane in-process and a CPU node agent process
 * (startCluster), every implemented operation driven through `new Nimbus(...)`.
 */
import { writeFileSync, mkdtempSync, rmSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import type { Client } from 'pg';
import WebSocket from 'ws';
import {
  BadUserInputError, ForbiddenError, Nimbus, NimbusError, NotFoundError, RateLimitedError, SpendLimitReachedError,
  UnauthenticatedError, WaitTimeoutError, WebhookVerificationError, verifyWebhook, type FetchLike, type Prediction, type TrainingJob,
} from '../../sdk/src';
import { startFakeStripe, type FakeStripe } from '../../src/modules/billing/fake-stripe';
import { signUpTenant, uniqueEmail, type TestTenant } from '../support/api';
import { startCluster, waitFor, type TestCluster } from '../support/cluster';
import { ownerClient } from '../support/db';

const OPERATOR = 'sdk-operator@example.test';

let cluster: TestCluster;
let fake: FakeStripe;
let owner: Client;
let a: TestTenant;
let b: TestTenant;
let baseUrl: string;
/** Tenant A through the SDK with an API key, and tenant B with its JWT. */
let nimbus: Nimbus;
let other: Nimbus;
beforeAll(async () => {
  fake = await startFakeStripe();
  cluster = await startCluster({
    agents: [{ name: 'cpu-sdk', devices: 4 }],
    // The SDK's waits and subscriptions against an API that gets job updates from Redis only.
    separateProcesses: true,
    apiOverrides: {
      OPERATOR_EMAILS: OPERATOR,
      // Billing against the local fake Stripe (the same code path as Stripe).
      STRIPE_SECRET_KEY: 'sk_test_nimbus_sdk', STRIPE_API_BASE: fake.url, STRIPE_WEBHOOK_SECRET: fake.webhookSecret,
    },
  });
  owner = await ownerClient();
  baseUrl = cluster.api.server.url.replace(/\/graphql$/, '');
  a = await signUpTenant(cluster.api, 'SdkAlpha');
  b = await signUpTenant(cluster.api, 'SdkBeta');
  const key = await new Nimbus({ baseUrl, apiKey: a.token }).apiKeys.create({ name: 'sdk-tests', scopes: ['PREDICT', 'TRAIN', 'READ', 'BILLING', 'ADMIN'] });
  nimbus = new Nimbus({ baseUrl, apiKey: key.secret });
  other = new Nimbus({ baseUrl, apiKey: b.token });
});
afterAll(async () => {
  await nimbus?.close();
  await other?.close();
  await owner?.end();
  await cluster?.close();
  await fake?.close();
});

const jobsWithKey = async (key: string) =>
  (await owner.query('SELECT id FROM jobs WHERE idempotency_key = $1', [key])).rows.map((r) => r.id as string);

/** A WebSocket class that counts the connections it opens (to prove which transport a wait used). */
function countingWebSocket() {
  const counter = { opened: 0 };
  class Counting extends WebSocket {
    constructor(...args: ConstructorParameters<typeof WebSocket>) {
      super(...args);
      counter.opened++;
    }
  }
  return { impl: Counting, counter };
}

/** fetch that counts requests by operation name. */
function countingFetch() {
  const ops: string[] = [];
  const fetchImpl: FetchLike = async (url, init) => {
    ops.push(JSON.parse(String(init?.body)).operationName);
    return fetch(url, init);
  };
  return { fetchImpl, ops };
}

describe('accounts', () => {
  it('signs up, logs in for a JWT, builds a client with it, and reads me()', async () => {
    const anon = new Nimbus({ baseUrl, apiKey: '' });
    const email = uniqueEmail('sdk');
    const signed = await anon.auth.signUp({ email, password: 'a long password', tenantName: 'Sdk Signup' });
    expect(signed.tenant.name).toBe('Sdk Signup');
    const session = await anon.auth.logIn({ email, password: 'a long password' });
    const me = await anon.withApiKey(session.token).me();
    expect(me).toMatchObject({ user: { email }, role: 'OWNER', tenant: { id: signed.tenant.id, plan: expect.any(String), status: 'ACTIVE' } });
    const viaKey = await nimbus.me();
    expect(viaKey.user).toBeNull();
    expect(viaKey.tenant.id).toBe(a.tenantId);
    await expect(anon.me()).rejects.toBeInstanceOf(UnauthenticatedError);
    await expect(anon.auth.logIn({ email, password: 'wrong password' })).rejects.toBeInstanceOf(UnauthenticatedError);
  });

  it('creates, lists and revokes API keys; a revoked key is refused', async () => {
    const created = await nimbus.apiKeys.create({ name: 'temp', scopes: ['READ'] });
    expect(created.secret).toMatch(/^nmb_/);
    const listed = await nimbus.apiKeys.list({ pageSize: 1 }).toArray();
    expect(listed.map((k) => k.id)).toEqual(expect.arrayContaining([created.apiKey.id]));
    expect(listed.length).toBeGreaterThanOrEqual(2);
    const readOnly = new Nimbus({ baseUrl, apiKey: created.secret });
    expect((await readOnly.me()).tenant.id).toBe(a.tenantId);
    await expect(readOnly.predict({ service: 'system.echo', input: {}, wait: 0 })).rejects.toBeInstanceOf(ForbiddenError);
    expect((await nimbus.apiKeys.revoke(created.apiKey.id)).revokedAt).not.toBeNull();
    await expect(readOnly.me()).rejects.toBeInstanceOf(UnauthenticatedError);
  });

  it('operator operations: nodes, quotas, setQuota (and FORBIDDEN for a tenant)', async () => {
    const anon = new Nimbus({ baseUrl, apiKey: '' });
    // Operator accounts are made out of band (`npm run operator`): public sign-up refuses their address.
    await cluster.api.app.services.tenancy.signUp({ email: OPERATOR, password: 'operator password', tenantName: 'Ops' }, { operatorAccount: true });
    await expect(anon.auth.signUp({ email: OPERATOR, password: 'another password', tenantName: 'Claim' })).rejects.toBeInstanceOf(ForbiddenError);
    const op = await anon.auth.logIn({ email: OPERATOR, password: 'operator password' });
    const operator = anon.withApiKey(op.token);
    const nodes = await operator.operator.nodes();
    expect(nodes.find((n) => n.name === 'cpu-sdk')).toMatchObject({ hardware: 'CPU', gpuCount: 4, status: expect.any(String) });
    const set = await operator.operator.setQuota({ tenantId: a.tenantId, hardware: 'CPU', guaranteed: 3, limit: 16 });
    expect(set).toEqual({ tenant: { id: a.tenantId }, hardware: 'CPU', guaranteed: 3, limit: 16 });
    expect((await operator.operator.quotas()).find((q) => q.tenant.id === a.tenantId && q.hardware === 'CPU')).toMatchObject({ guaranteed: 3, limit: 16 });
    await expect(nimbus.operator.nodes()).rejects.toBeInstanceOf(ForbiddenError);
  });
});

describe('services and predictions', () => {
  it('lists the services with prices', async () => {
    const services = await nimbus.services.list();
    expect(services.map((s) => s.id)).toEqual(expect.arrayContaining(['system.echo', 'language.sentiment', 'vision.detect-objects', 'forecast.auto']));
    expect(services.find((s) => s.id === 'system.echo')!.pricing).toEqual({ unit: expect.any(String), unitAmountCents: expect.stringMatching(/^\d+(\.\d+)?$/) });
  });

  it('predicts synchronously with a typed output', async () => {
    const p = await nimbus.predict({ service: 'system.echo', input: { message: { hello: 'sdk' } }, wait: 10 });
    expect(p).toMatchObject({ __typename: 'Prediction', status: 'SUCCEEDED', service: 'system.echo', output: { message: { hello: 'sdk' } }, error: null, progress: 1 });
    expect(p.usage.hardware).toBe('CPU');
    const message: unknown = p.output?.message; // typed: ServiceOutputs['system.echo']
    expect(message).toEqual({ hello: 'sdk' });
    const failed = await nimbus.predict({ service: 'system.echo', input: { fail: true }, wait: 10 });
    expect(failed).toMatchObject({ status: 'FAILED', error: { code: 'JOB_FAILED' } });
  });

  it('runs a real pre-tuned service (language.sentiment)', async () => {
    const p = await nimbus.predict({ service: 'language.sentiment', input: { text: 'I love this product. It works wonderfully.' }, wait: 60 });
    expect(p.status).toBe('SUCCEEDED');
    expect(p.output).toMatchObject({ label: 'positive', score: expect.any(Number) });
    expect(p.output!.score).toBeGreaterThan(0);
  });

  it('waits with progress over the WebSocket subscription', async () => {
    const { impl, counter } = countingWebSocket();
    const { fetchImpl, ops } = countingFetch();
    const client = new Nimbus({ baseUrl, apiKey: a.token, webSocketImpl: impl, fetch: fetchImpl });
    const seen: Array<{ status: string; progress: number }> = [];
    try {
      const p = await client.predict({
        service: 'system.echo', input: { message: 'ws', sleepMs: 1200, progressSteps: 4 }, wait: true,
        onProgress: (u) => seen.push({ status: u.status, progress: u.progress }),
      });
      expect(p).toMatchObject({ status: 'SUCCEEDED', output: { message: 'ws' }, progress: 1 });
      expect(counter.opened).toBe(1);
      expect(ops).toEqual(['Predict']);
      expect(seen.some((s) => s.progress > 0 && s.progress < 1)).toBe(true);
      expect(seen.at(-1)).toEqual({ status: 'SUCCEEDED', progress: 1 });
    } finally {
      await client.close();
    }
  });

  it('falls back to polling with backoff when WebSockets are unavailable', async () => {
    const { fetchImpl, ops } = countingFetch();
    const client = new Nimbus({ baseUrl, apiKey: a.token, webSocketImpl: false, fetch: fetchImpl });
    const seen: number[] = [];
    const p = await client.predict({
      service: 'system.echo', input: { message: 'poll', sleepMs: 1500, progressSteps: 3 }, wait: true, onProgress: (u) => seen.push(u.progress),
    });
    expect(p).toMatchObject({ status: 'SUCCEEDED', output: { message: 'poll' } });
    expect(ops[0]).toBe('Predict');
    expect(ops.filter((o) => o === 'Prediction').length).toBeGreaterThanOrEqual(2);
    expect(seen.some((x) => x > 0 && x < 1)).toBe(true);
  });

  it('waits for a queued prediction with wait(job), also from a list summary', async () => {
    const queued = await nimbus.predict({ service: 'system.echo', input: { message: 'later', sleepMs: 300 }, wait: 0 });
    expect(['QUEUED', 'ADMITTED', 'RUNNING']).toContain(queued.status);
    const done = await nimbus.wait(queued, { timeoutMs: 20_000 });
    expect(done).toMatchObject({ id: queued.id, status: 'SUCCEEDED', output: { message: 'later' } });
    const [summary] = await nimbus.predictions.list({ limit: 1 }).toArray();
    expect((await nimbus.wait(summary!)).status).toBeDefined();
  });

  it('lists predictions across pages, newest first', async () => {
    const c = await signUpTenant(cluster.api, 'SdkPages');
    const client = new Nimbus({ baseUrl, apiKey: c.token });
    const ids: string[] = [];
    for (let i = 0; i < 5; i++) ids.push((await client.predict({ service: 'system.echo', input: { message: i }, wait: 0 })).id);
    const pages: string[][] = [];
    for await (const page of client.predictions.list({ pageSize: 2 }).pages()) pages.push(page.items.map((p) => p.id));
    expect(pages.map((p) => p.length)).toEqual([2, 2, 1]);
    expect(pages.flat()).toEqual([...ids].reverse());
    const items: string[] = [];
    for await (const p of client.predictions.list({ pageSize: 2 })) items.push(p.id);
    expect(items).toEqual([...ids].reverse());
    expect(await client.predictions.list({ pageSize: 2, limit: 3 }).toArray()).toHaveLength(3);
    const first = await client.predictions.list({ pageSize: 4 }).firstPage();
    expect(first).toMatchObject({ hasNextPage: true, endCursor: expect.any(String) });
    expect(first.items).toHaveLength(4);
  });

  it('cancels a running prediction', async () => {
    const p = await nimbus.predict({ service: 'system.echo', input: { sleepMs: 30_000 }, wait: 0 });
    await waitFor(async () => (await nimbus.predictions.get(p.id)).status === 'RUNNING', 10_000, 'RUNNING');
    expect((await nimbus.predictions.cancel(p.id)).status).toBe('CANCELED');
    expect((await nimbus.predictions.get(p.id)).status).toBe('CANCELED');
  });

  it('an AbortSignal stops the wait and, with cancelOnAbort, cancels the job', async () => {
    const ac = new AbortController();
    let id = '';
    const started = nimbus.predict({
      service: 'system.echo', input: { sleepMs: 30_000, progressSteps: 30 }, wait: true, signal: ac.signal, cancelOnAbort: true,
      onProgress: (u) => {
        id = u.id;
        if (u.status === 'RUNNING') ac.abort();
      },
    });
    const err = await started.catch((e: unknown) => e);
    expect((err as Error).name).toBe('AbortError');
    await waitFor(async () => (await nimbus.predictions.get(id)).status === 'CANCELED', 5000, 'CANCELED');

    // Without cancelOnAbort the job goes on; a timeout gives a WaitTimeoutError with the last state.
    const running = await nimbus.predict({ service: 'system.echo', input: { sleepMs: 30_000 }, wait: 0 });
    const ac2 = new AbortController();
    setTimeout(() => ac2.abort(), 300);
    await expect(nimbus.wait(running, { signal: ac2.signal })).rejects.toMatchObject({ name: 'AbortError' });
    expect((await nimbus.predictions.get(running.id)).status).not.toBe('CANCELED');
    const timeout = await nimbus.wait(running, { timeoutMs: 500 }).catch((e: unknown) => e);
    expect(timeout).toBeInstanceOf(WaitTimeoutError);
    expect((timeout as WaitTimeoutError).job).toMatchObject({ id: running.id });
    await nimbus.predictions.cancel(running.id);
  });
});

describe('errors', () => {
  it('bad input is a BadUserInputError naming the field, with the request id', async () => {
    const err = await nimbus.predict({ service: 'system.echo', input: { nope: 1 } as never, wait: 0 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(BadUserInputError);
    expect(err).toBeInstanceOf(NimbusError);
    expect(err).toMatchObject({ code: 'BAD_USER_INPUT', field: 'input.nope', requestId: expect.any(String) });
    const unknown = await nimbus.predict({ service: 'no.such', input: {} }).catch((e: unknown) => e);
    expect(unknown).toMatchObject({ code: 'BAD_USER_INPUT', field: 'input.service' });
    await expect(new Nimbus({ baseUrl, apiKey: 'nmb_nope_nope' }).me()).rejects.toBeInstanceOf(UnauthenticatedError);
  });

  it("another tenant's prediction is NOT_FOUND to get, cancel and wait (subscription and polling)", async () => {
    const mine = await nimbus.predict({ service: 'system.echo', input: { sleepMs: 10_000 }, wait: 0 });
    await expect(other.predictions.get(mine.id)).rejects.toBeInstanceOf(NotFoundError);
    await expect(other.predictions.cancel(mine.id)).rejects.toBeInstanceOf(NotFoundError);
    await expect(other.predictions.wait(mine.id, { timeoutMs: 10_000 })).rejects.toBeInstanceOf(NotFoundError);
    await expect(other.predictions.wait(mine.id, { transport: 'polling', timeoutMs: 10_000 })).rejects.toBeInstanceOf(NotFoundError);
    expect((await other.predictions.list().toArray()).map((p) => p.id)).not.toContain(mine.id);
    expect((await nimbus.predictions.get(mine.id)).status).not.toBe('CANCELED');
    await nimbus.predictions.cancel(mine.id);
  });

  it('RATE_LIMITED is a RateLimitedError with retryAfterSeconds; retries honour it', async () => {
    const free = await signUpTenant(cluster.api, 'SdkFree');
    await owner.query(`UPDATE tenants SET plan = 'FREE' WHERE id = $1`, [free.tenantId]);
    cluster.api.app.services.tenancy.forgetTenantProfile(free.tenantId);
    const noRetry = new Nimbus({ baseUrl, apiKey: free.token, maxRetries: 0 });
    const results = await Promise.allSettled(Array.from({ length: 16 }, () => noRetry.me()));
    const limited = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected').map((r) => r.reason);
    expect(limited.length).toBeGreaterThan(0);
    expect(limited[0]).toBeInstanceOf(RateLimitedError);
    expect(limited[0]).toMatchObject({ code: 'RATE_LIMITED', status: 429, retryAfterSeconds: expect.any(Number) });
    expect(limited[0].retryAfterSeconds).toBeGreaterThan(0);
    // The bucket is empty now; a client that retries waits retryAfterSeconds and gets through.
    const retrying = new Nimbus({ baseUrl, apiKey: free.token, maxRetries: 5 });
    const again = await Promise.all(Array.from({ length: 4 }, () => retrying.me()));
    expect(again.every((m) => m.tenant.id === free.tenantId)).toBe(true);
  });

  it('a predict retried after a lost response creates one job (idempotency key)', async () => {
    let predicts = 0;
    const keys: string[] = [];
    const flaky: FetchLike = async (url, init) => {
      const body = JSON.parse(String(init?.body));
      if (body.operationName === 'Predict') {
        keys.push(body.variables.input.idempotencyKey);
        if (++predicts === 1) {
          await fetch(url, init); // the server creates the job, the answer is lost
          throw new TypeError('fetch failed', { cause: Object.assign(new Error('socket hang up'), { code: 'ECONNRESET' }) });
        }
      }
      return fetch(url, init);
    };
    const client = new Nimbus({ baseUrl, apiKey: a.token, fetch: flaky });
    const p = await client.predict({ service: 'system.echo', input: { message: 'once' }, wait: 10 });
    expect(p).toMatchObject({ status: 'SUCCEEDED', output: { message: 'once' } });
    expect(predicts).toBe(2);
    expect(keys[1]).toBe(keys[0]);
    expect(await jobsWithKey(keys[0]!)).toEqual([p.id]);
  });
});

describe('webhooks', () => {
  let server: Server;
  const received: Array<{ headers: IncomingMessage['headers']; body: string }> = [];
  beforeAll(async () => {
    server = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        received.push({ headers: req.headers, body: Buffer.concat(chunks).toString('utf8') });
        res.writeHead(204).end();
      });
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  });
  afterAll(() => new Promise((r) => server.close(r)));

  it('a delivered webhook verifies with verifyWebhook; a tampered body or another secret is rejected', async () => {
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/hook`;
    const p: Prediction = await nimbus.predict({ service: 'system.echo', input: { message: 'hooked' }, wait: 10, webhookUrl: url });
    await waitFor(() => received.some((r) => r.body.includes(p.id)), 10_000, 'webhook');
    const delivery = received.find((r) => r.body.includes(p.id))!;
    const { signingSecret } = await nimbus.webhooks.settings();
    const event = verifyWebhook<{ message: string }>(delivery.headers, delivery.body, signingSecret);
    expect(event).toMatchObject({ type: 'prediction.succeeded', data: { id: p.id, status: 'SUCCEEDED', output: { message: 'hooked' } } });
    expect(() => verifyWebhook(delivery.headers, delivery.body.replace('hooked', 'forged'), signingSecret)).toThrow(WebhookVerificationError);
    const { rows: [tb] } = await owner.query('SELECT webhook_secret FROM tenants WHERE id = $1', [b.tenantId]);
    expect(() => verifyWebhook(delivery.headers, delivery.body, tb.webhook_secret)).toThrow(WebhookVerificationError);
    expect(() => verifyWebhook(delivery.headers, delivery.body, signingSecret, { now: Date.now() + 10 * 60_000 })).toThrow(/too old/);
    await waitFor(async () => (await nimbus.webhooks.deliveries({ jobId: p.id }).toArray()).some((d) => d.delivered), 5000, 'the delivery record');
    expect((await nimbus.webhooks.deliveries({ jobId: p.id }).toArray())[0]).toMatchObject({ jobId: p.id, eventType: 'prediction.succeeded', url, statusCode: 204 });
    expect(await other.webhooks.deliveries({ jobId: p.id }).toArray()).toEqual([]);
  });

  it('reads, updates and rotates the webhook settings; during the grace period both secrets verify', async () => {
    const before = await nimbus.webhooks.settings();
    expect((await nimbus.webhooks.update({ url: 'https://hooks.example.test/nimbus' })).url).toBe('https://hooks.example.test/nimbus');
    await expect(nimbus.webhooks.update({ url: 'ftp://x' })).rejects.toMatchObject({ code: 'BAD_USER_INPUT', field: 'input.url' });
    expect((await nimbus.webhooks.update({ url: null })).url).toBeNull();
    const rotated = await nimbus.webhooks.rotateSecret();
    expect(rotated.signingSecret).not.toBe(before.signingSecret);
    expect(rotated.previousSecretExpiresAt).not.toBeNull();
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/hook`;
    const p = await nimbus.predict({ service: 'system.echo', input: { message: 'rotated' }, wait: 10, webhookUrl: url });
    await waitFor(() => received.some((r) => r.body.includes(p.id)), 10_000, 'webhook');
    const delivery = received.find((r) => r.body.includes(p.id))!;
    for (const secret of [rotated.signingSecret, before.signingSecret]) {
      expect(verifyWebhook(delivery.headers, delivery.body, secret).data).toMatchObject({ id: p.id });
    }
    // Resent on request, as the same event.
    expect(await nimbus.webhooks.resend(p.id)).toMatchObject({ eventType: 'prediction.succeeded', webhookId: delivery.headers['webhook-id'] });
    await waitFor(() => received.filter((r) => r.body.includes(p.id)).length === 2, 10_000, 'the resend');
  });
});

/** A small dataset with signal: label = yes when a + b > 1. */
function pairs(n: number, seed: number): Array<{ a: number; b: number; label: string }> {
  let x = seed;
  const random = () => ((x = (x * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
  return Array.from({ length: n }, () => {
    const a = Math.round(random() * 1000) / 1000;
    const b = Math.round(random() * 1000) / 1000;
    return { a, b, label: a + b > 1 ? 'yes' : 'no' };
  });
}
const csv = (rows: Array<Record<string, unknown>>) => `${Object.keys(rows[0]!).join(',')}\n${rows.map((r) => Object.values(r).join(',')).join('\n')}\n`;

describe('datasets, training, models and deployments', () => {
  let dir: string;
  let datasetId: string;
  let job: TrainingJob;
  let deploymentId: string;
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'nimbus-sdk-'));
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('uploads a dataset from a path, bytes and a stream; another file is a new version', async () => {
    const file = join(dir, 'pairs.csv');
    writeFileSync(file, csv(pairs(200, 1)));
    const first = await nimbus.datasets.upload(file);
    datasetId = first.dataset.id;
    expect(first.dataset).toMatchObject({ name: 'pairs', format: 'CSV' });
    expect(first.version).toMatchObject({ version: 1, rowCount: 200, contentHash: expect.stringMatching(/^[0-9a-f]{64}$/) });
    expect(first.version.columns.map((c) => [c.name, c.type])).toEqual([['a', 'NUMBER'], ['b', 'NUMBER'], ['label', 'CATEGORY']]);

    const second = await nimbus.datasets.upload(Buffer.from(csv(pairs(240, 2))), { datasetId });
    expect(second.version).toMatchObject({ version: 2, rowCount: 240 });
    expect(second.dataset.versions.map((v) => v.version)).toEqual([2, 1]);

    const jsonl = pairs(30, 3).map((r) => JSON.stringify(r)).join('\n');
    const streamed = await nimbus.datasets.upload(Readable.from([Buffer.from(jsonl)]), { name: 'pairs-jsonl' });
    expect(streamed).toMatchObject({ dataset: { name: 'pairs-jsonl', format: 'JSONL' }, version: { rowCount: 30 } });

    expect((await nimbus.datasets.get(datasetId)).versions).toHaveLength(2);
    expect((await nimbus.datasets.list({ pageSize: 1 }).toArray()).map((d) => d.id)).toEqual([streamed.dataset.id, datasetId]);
    await expect(other.datasets.get(datasetId)).rejects.toBeInstanceOf(NotFoundError);
    await expect(nimbus.datasets.upload(Buffer.from(''), {})).rejects.toMatchObject({ code: 'BAD_USER_INPUT', field: 'name' });
  });

  it('trains with AutoML, following progress and trials over the subscription; the best trial becomes a model version', async () => {
    const { impl, counter } = countingWebSocket();
    const client = new Nimbus({ baseUrl, apiKey: a.token, webSocketImpl: impl });
    try {
      const created = await client.trainings.create({
        datasetId, modelName: 'pairs', task: 'TABULAR_CLASSIFICATION', targetColumn: 'label', seed: 7,
        automl: { maxTrials: 2, algorithms: ['logistic_regression', 'decision_tree'], parallelTrials: 2 },
      });
      expect(created).toMatchObject({ __typename: 'TrainingJob', modelName: 'pairs', task: 'TABULAR_CLASSIFICATION' });
      const seen: Array<{ status: string; progress: number; trials: number }> = [];
      job = await client.wait(created, { timeoutMs: 60_000, onProgress: (j) => seen.push({ status: j.status, progress: j.progress, trials: j.trials.length }) });
      expect(counter.opened).toBe(1);
      expect(job.status).toBe('SUCCEEDED');
      expect(job.trials).toHaveLength(2);
      expect(job.trials.every((t) => t.status === 'SUCCEEDED' && typeof t.metrics?.[job.metric] === 'number')).toBe(true);
      expect(job.bestTrial!.metrics![job.metric]).toBeGreaterThan(0.7);
      expect(job.modelVersion).toMatchObject({ version: 1, model: { name: 'pairs' }, datasetVersion: { version: 2 }, trainingJob: { id: job.id } });
      expect(job.modelVersion!.featureSchema).toMatchObject({ features: [{ name: 'a' }, { name: 'b' }], target: { name: 'label', classes: ['no', 'yes'] } });
      expect(seen.length).toBeGreaterThanOrEqual(2);
      expect(seen.at(-1)).toMatchObject({ status: 'SUCCEEDED', progress: 1 });
    } finally {
      await client.close();
    }
    const models = await nimbus.models.list().toArray();
    expect(models.find((m) => m.name === 'pairs')).toMatchObject({ task: 'TABULAR_CLASSIFICATION', versions: [{ id: job.modelVersion!.id, version: 1 }] });
    const model = await nimbus.models.get(job.modelVersion!.model.id);
    expect(model.versions[0]!.metrics[job.metric]).toBeGreaterThan(0.7);
    expect((await nimbus.models.version(job.modelVersion!.id)).algorithm).toBe(job.bestTrial!.algorithm);
    await expect(other.trainings.get(job.id)).rejects.toBeInstanceOf(NotFoundError);
  });

  it('deploys the model, predicts with the deployment, and rolls it to a new version (training waited by polling)', async () => {
    const deployment = await nimbus.deployments.create({ name: 'pairs-prod', modelVersionId: job.modelVersion!.id, hardware: 'CPU' });
    deploymentId = deployment.id;
    expect(deployment).toMatchObject({ name: 'pairs-prod', hardware: 'CPU', modelVersion: { id: job.modelVersion!.id, version: 1 } });
    const p = await nimbus.predict({ deployment: deploymentId, input: { rows: [{ a: 0.95, b: 0.9 }, { a: 0.05, b: 0.1 }] }, wait: 30 });
    expect(p.status).toBe('SUCCEEDED');
    expect(p.output!.predictions.map((x) => x.label)).toEqual(['yes', 'no']);

    const polling = new Nimbus({ baseUrl, apiKey: a.token, webSocketImpl: false });
    const second = await polling.trainings.create({ datasetId, modelName: 'pairs', task: 'TABULAR_CLASSIFICATION', targetColumn: 'label', algorithm: 'decision_tree' });
    const done = await polling.trainings.wait(second.id, { timeoutMs: 60_000 });
    expect(done).toMatchObject({ status: 'SUCCEEDED', modelVersion: { version: 2 } });
    const rolled = await nimbus.deployments.update(deploymentId, { modelVersionId: done.modelVersion!.id });
    expect(rolled.modelVersion).toMatchObject({ id: done.modelVersion!.id, version: 2 });
    expect((await nimbus.deployments.get(deploymentId)).modelVersion.version).toBe(2);
    expect((await nimbus.deployments.list().toArray()).map((d) => d.id)).toContain(deploymentId);
    const again = await nimbus.predict({ deployment: deploymentId, input: { rows: [{ a: 0.99, b: 0.99 }] } });
    expect(again.output!.predictions[0]!.label).toBe('yes');
  });

  it('cancels a training job, directly or through an AbortSignal with cancelOnAbort; bad input names the field', async () => {
    const input = { datasetId, modelName: 'pairs-cancel', task: 'TABULAR_CLASSIFICATION' as const, targetColumn: 'label', automl: { maxTrials: 4 } };
    const t1 = await nimbus.trainings.create(input);
    expect((await nimbus.trainings.cancel(t1.id)).status).toBe('CANCELED');
    const t2 = await nimbus.trainings.create(input);
    const ac = new AbortController();
    setTimeout(() => ac.abort(), 200);
    await expect(nimbus.trainings.wait(t2.id, { signal: ac.signal, cancelOnAbort: true })).rejects.toMatchObject({ name: 'AbortError' });
    expect((await nimbus.trainings.get(t2.id)).status).toBe('CANCELED');
    const bad = await nimbus.trainings.create({ ...input, targetColumn: 'nope' }).catch((e: unknown) => e);
    expect(bad).toBeInstanceOf(BadUserInputError);
    expect((bad as BadUserInputError).field).toMatch(/targetColumn/);
  });
});

describe('usage and billing', () => {
  it('reads usage from the ledger grouped by service', async () => {
    const now = Date.now();
    const usage = await nimbus.usage.get({ from: new Date(now - 3600_000), to: new Date(now + 60_000) });
    const echo = usage.rows.find((r) => r.service === 'system.echo' && r.hardware === 'CPU');
    expect(echo!.seconds).toBeGreaterThan(0);
    expect(echo!.minutes).toBeCloseTo(echo!.seconds / 60, 6);
    expect(usage.total.currency).toBe('usd');
    expect(usage.totalSeconds).toBeCloseTo(usage.rows.reduce((n, r) => n + r.seconds, 0), 3);
    await expect(nimbus.usage.get({ from: new Date(now), to: new Date(now - 1000) })).rejects.toBeInstanceOf(BadUserInputError);
  });

  it('reads the open bill, sets a spend limit, lists and reads invoices', async () => {
    const bill = await nimbus.bill.current();
    expect(new Date(bill.periodEnd).getTime()).toBeGreaterThan(Date.now());
    expect(bill.total.currency).toBe('usd');
    expect(bill.spendLimit).toBeNull();
    expect(await nimbus.spendLimit.set(50_000)).toEqual({ amountCents: 50_000, currency: 'usd' });
    expect((await nimbus.bill.current()).spendLimit).toEqual({ amountCents: 50_000, currency: 'usd' });

    let customer: string | null = null;
    await waitFor(async () => (customer = (await owner.query('SELECT stripe_customer_id FROM tenants WHERE id = $1', [a.tenantId])).rows[0].stripe_customer_id) !== null, 10_000, 'Stripe customer');
    const invoice = fake.finalizeInvoice(customer!, { status: 'paid' });
    const invoices = await nimbus.invoices.list();
    expect(invoices).toEqual([expect.objectContaining({ id: invoice.id, status: 'paid', total: { amountCents: invoice.total, currency: 'usd' } })]);
    expect((await nimbus.invoices.get(invoice.id)).number).toBe(invoice.number);
    await expect(other.invoices.get(invoice.id)).rejects.toBeInstanceOf(NotFoundError);
  });

  it('a spend limit reached refuses new jobs with SpendLimitReachedError', async () => {
    const capped = new Nimbus({ baseUrl, apiKey: (await signUpTenant(cluster.api, 'SdkCapped')).token });
    await capped.spendLimit.set(0);
    const err = await capped.predict({ service: 'system.echo', input: {} }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(SpendLimitReachedError);
    expect((err as SpendLimitReachedError).extensions).toMatchObject({ spendLimitCents: 0 });
  });
});
