import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Client } from 'pg';
import sharp from 'sharp';
import { getService } from '../../src/modules/services/catalog';
import { signUpTenant, type TestTenant } from '../support/api';
import { startCluster, waitFor, type TestCluster } from '../support/cluster';
import { ownerClient } from '../support/db';
import { CANCEL } from '../support/gql';
import { AIR_PASSENGERS } from '../fixtures/air-passengers';

/**
 * Every pre-tuned service through the whole system: GraphQL `predict` → job row → admitter →
 * BullMQ → a real node agent process (real models in its worker threads) → node events →
 * recorder → ledger → the waiting request. Answers are checked against known truths, not just shapes.
 */

const PREDICT = `mutation Predict($input: PredictInput!) {
  predict(input: $input) { id service status output error { code message } createdAt startedAt completedAt usage { seconds hardware } attempt node { id } metrics }
}`;
const PREDICTION = `query Prediction($id: ID!) {
  prediction(id: $id) { id service status progress output error { code message } node { id } usage { seconds hardware } metrics startedAt }
}`;
const SERVICES = `query Services {
  services { id kind name description modelName modelVersion hardware inputExample pricing { unit unitAmountCents } }
}`;

interface Box { x: number; y: number; width: number; height: number }
interface PredictionView<T> {
  id: string;
  service: string;
  status: string;
  output: T;
  error: { code: string; message: string } | null;
  usage: { seconds: number; hardware: string };
  attempt: number;
  node: { id: string } | null;
  metrics: Record<string, number>;
  startedAt: string | null;
}

let cluster: TestCluster;
let owner: Client;
let t: TestTenant;
/** Every prediction that succeeded, with the usage the API reported: checked against the ledger at the end. */
const succeeded = new Map<string, { service: string; seconds: number }>();

beforeAll(async () => {
  cluster = await startCluster({ agents: [{ name: 'svc-1', devices: 2 }] });
  owner = await ownerClient();
  t = await signUpTenant(cluster.api, 'Services');
}, 60_000);
afterAll(async () => {
  await owner?.end();
  await cluster?.close();
});

const gql = (q: string, v: Record<string, unknown> = {}) => cluster.api.gql(q, v, t.token);
const ledger = (jobId: string) =>
  owner.query('SELECT attempt, billable, billable_ms::int AS ms, reason FROM usage_ledger WHERE job_id = $1 ORDER BY attempt', [jobId]).then((r) => r.rows);

/** predict with wait; expects SUCCEEDED on svc-1 and an output that satisfies the contract schema. */
async function predict<T>(service: string, input: unknown, wait = 60): Promise<PredictionView<T>> {
  const res = await gql(PREDICT, { input: { service, input, wait } });
  expect(res.errors).toBeUndefined();
  const p = res.data.predict as PredictionView<T>;
  expect({ service, status: p.status, error: p.error }).toEqual({ service, status: 'SUCCEEDED', error: null });
  expect(p).toMatchObject({ service, attempt: 1, node: { id: 'svc-1' }, usage: { hardware: 'CPU' } });
  expect(getService(service)?.outputSchema.safeParse(p.output).error).toBeUndefined();
  succeeded.set(p.id, { service, seconds: p.usage.seconds });
  return p;
}

/** Calls predict expecting a refusal (no prediction); returns the error code, field and message. */
async function refused(service: string, input: unknown): Promise<{ field: unknown; code: unknown; message: string }> {
  const res = await gql(PREDICT, { input: { service, input, wait: 5 } });
  expect(res.data?.predict ?? null).toBeNull();
  const e = res.errors?.[0];
  return { code: e?.extensions?.code, field: e?.extensions?.field, message: e?.message ?? '' };
}

const sample = (i: number) => readFileSync(join('node_modules/@vladmandic/face-api/demo', `sample${i}.jpg`)).toString('base64');

async function textPng(lines: string[]): Promise<string> {
  const text = lines
    .map((l, i) => `<text x="30" y="${90 + 100 * i}" font-family="DejaVu Sans, sans-serif" font-size="48">${l}</text>`)
    .join('');
  const svg = `<svg xmlns="http://www.w3.org/2000/svg" width="900" height="${60 + 100 * lines.length}"><rect width="100%" height="100%" fill="white"/>${text}</svg>`;
  return (await sharp(Buffer.from(svg)).png().toBuffer()).toString('base64');
}

describe('the services query', () => {
  it('lists the ten services with model, version, hardware and price', async () => {
    const res = await gql(SERVICES);
    expect(res.errors).toBeUndefined();
    const services = res.data.services as Array<Record<string, any>>;
    expect(services.map((s) => s.id).sort()).toEqual([
      'forecast.auto', 'language.detect-language', 'language.entities', 'language.keywords', 'language.sentiment',
      'system.echo', 'vision.detect-objects', 'vision.faces', 'vision.moderate', 'vision.ocr',
    ]);
    for (const s of services) {
      expect({ id: s.id, kind: s.kind, modelName: typeof s.modelName, hardware: s.hardware, unit: s.pricing.unit }).toEqual({
        id: s.id, kind: s.id === 'system.echo' ? 'SYSTEM' : s.id.startsWith('vision.') ? 'VISION' : s.id.startsWith('language.') ? 'LANGUAGE' : 'FORECAST',
        modelName: 'string', hardware: 'CPU', unit: 'CPU minute',
      });
      expect(s.modelName.length).toBeGreaterThan(0);
      expect(s.modelVersion).toMatch(/^\d+(\.\d+)*/);
      expect(s.modelVersion).not.toMatch(/unknown/);
      expect(Number(s.pricing.unitAmountCents)).toBeGreaterThan(0);
      expect(s.inputExample).toEqual(getService(s.id)?.inputExample);
    }
  });
});

describe('vision', () => {
  it('warms every model on the node once', async () => {
    // One call per model, in parallel over the node's two slots; later calls mostly find them loaded.
    const png = await textPng(['warm']);
    await Promise.all([
      predict('vision.faces', { image: sample(1) }),
      predict('vision.detect-objects', { image: sample(1) }),
      predict('vision.moderate', { image: sample(1) }),
      predict('vision.ocr', { image: png }),
      predict('language.entities', { text: 'Ada Lovelace lived in London.' }),
      predict('forecast.auto', { series: AIR_PASSENGERS.slice(0, 24), horizon: 2 }),
    ]);
  }, 90_000);

  // The counts runtimes.test.ts verified on the six face-api demo photos.
  const FACES: Record<number, number> = { 1: 3, 2: 3, 3: 3, 4: 4, 5: 5, 6: 4 };

  it('counts the faces in the face-api sample photos', async () => {
    const counts: Record<number, number> = {};
    await Promise.all(Object.keys(FACES).map(async (k) => {
      const i = Number(k);
      const p = await predict<{ faces: Array<{ box: Box; age: number; emotion: string; emotions: Record<string, number>; embedding?: number[] }> }>(
        'vision.faces', { image: sample(i), embeddings: i === 2 });
      counts[i] = p.output.faces.length;
      for (const f of p.output.faces) {
        expect(f.age).toBeGreaterThan(10);
        expect(f.age).toBeLessThan(60);
        expect(f.emotions[f.emotion]).toBe(Math.max(...Object.values(f.emotions)));
        expect(f.embedding?.length ?? 0).toBe(i === 2 ? 1024 : 0);
      }
    }));
    expect(counts).toEqual(FACES);
  }, 60_000);

  it('finds at least one person, with boxes inside the image', async () => {
    const p = await predict<{ objects: Array<{ label: string; score: number; box: Box }>; width: number; height: number }>(
      'vision.detect-objects', { image: sample(6), minScore: 0.3 });
    expect({ width: p.output.width, height: p.output.height }).toEqual({ width: 1920, height: 1537 });
    expect(p.output.objects.filter((o) => o.label === 'person').length).toBeGreaterThanOrEqual(1);
    for (const o of p.output.objects) {
      expect(o.score).toBeGreaterThanOrEqual(0.3);
      expect(o.box.x).toBeGreaterThanOrEqual(0);
      expect(o.box.y).toBeGreaterThanOrEqual(0);
      expect(o.box.x + o.box.width).toBeLessThanOrEqual(1920);
      expect(o.box.y + o.box.height).toBeLessThanOrEqual(1537);
    }
    const few = await predict<{ objects: unknown[] }>('vision.detect-objects', { image: `data:image/jpeg;base64,${sample(6)}`, maxResults: 2 });
    expect(few.output.objects.length).toBeGreaterThanOrEqual(1);
    expect(few.output.objects.length).toBeLessThanOrEqual(2);
  });

  it('reads back the text of a rendered PNG', async () => {
    const p = await predict<{ text: string; confidence: number; lines: Array<{ text: string; box: Box }> }>(
      'vision.ocr', { image: await textPng(['Invoice 4711 paid', 'Nimbus reads text']) });
    expect(p.output.text).toBe('Invoice 4711 paid\nNimbus reads text');
    expect(p.output.lines.map((l) => l.text)).toEqual(['Invoice 4711 paid', 'Nimbus reads text']);
    expect(p.output.lines[0]!.box.y).toBeLessThan(p.output.lines[1]!.box.y);
    expect(p.output.confidence).toBeGreaterThan(80);
  });

  it('moderates with the five labels sorted by score; an ordinary photo is not flagged', async () => {
    const p = await predict<{ flagged: boolean; labels: Array<{ label: string; score: number }> }>('vision.moderate', { image: sample(1) });
    expect(p.output.labels.map((l) => l.label).sort()).toEqual(['drawing', 'hentai', 'neutral', 'porn', 'sexy']);
    const scores = p.output.labels.map((l) => l.score);
    expect(scores).toEqual([...scores].sort((a, b) => b - a));
    expect(scores.reduce((a, b) => a + b, 0)).toBeCloseTo(1, 2);
    expect(p.output.labels[0]!.label).toBe('neutral');
    expect(p.output.flagged).toBe(false);
  });

  it('reports model load and inference times in the prediction metrics', async () => {
    const p = await predict('vision.moderate', { image: sample(4) });
    const read = (await gql(PREDICTION, { id: p.id })).data.prediction as PredictionView<unknown>;
    expect(read.metrics).toEqual(p.metrics);
    expect(read.metrics).toMatchObject({ loadMs: expect.any(Number), runMs: expect.any(Number) });
    expect(read.metrics.loadMs).toBeGreaterThanOrEqual(0);
    expect(read.metrics.runMs).toBeGreaterThan(0);
  });
});

describe('language', () => {
  it('gives sentiment the right sign', async () => {
    const pos = await predict<{ score: number; label: string }>('language.sentiment', { text: 'I absolutely love this wonderful product. It works great!' });
    const neg = await predict<{ score: number; label: string; sentences: unknown[] }>('language.sentiment', { text: 'This is terrible. I hate it and the support was awful.' });
    expect(pos.output.score).toBeGreaterThan(0.2);
    expect(pos.output.label).toBe('positive');
    expect(neg.output.score).toBeLessThan(-0.2);
    expect(neg.output.label).toBe('negative');
    expect(neg.output.sentences).toHaveLength(2);
    expect(pos.metrics).toMatchObject({ loadMs: expect.any(Number), runMs: expect.any(Number) });
  });

  it('finds a named person, place and organisation with correct offsets', async () => {
    const text = 'Last week Angela Merkel travelled to Paris for a meeting with Microsoft Corp. about $300 million of investment.';
    const p = await predict<{ entities: Array<{ text: string; type: string; start: number; end: number }> }>('language.entities', { text });
    const byType = (type: string) => p.output.entities.filter((e) => e.type === type);
    expect(byType('PERSON').map((e) => e.text)).toContain('Angela Merkel');
    expect(byType('PLACE').map((e) => e.text)).toContain('Paris');
    expect(byType('ORGANIZATION').some((e) => e.text.startsWith('Microsoft'))).toBe(true);
    for (const e of p.output.entities) expect({ e, slice: text.slice(e.start, e.end) }).toEqual({ e, slice: e.text });
    const merkel = byType('PERSON').find((e) => e.text === 'Angela Merkel')!;
    expect([merkel.start, merkel.end]).toEqual([text.indexOf('Angela'), text.indexOf('Angela') + 'Angela Merkel'.length]);
  });

  it('extracts keywords sorted by score', async () => {
    const text = 'Electric cars need charging stations. The city builds new charging stations for electric cars and buses.';
    const p = await predict<{ keywords: Array<{ text: string; score: number }> }>('language.keywords', { text, maxResults: 3 });
    expect(p.output.keywords.length).toBeLessThanOrEqual(3);
    expect(p.output.keywords.map((k) => k.text.toLowerCase())).toContain('charging stations');
    const scores = p.output.keywords.map((k) => k.score);
    expect(scores).toEqual([...scores].sort((a, b) => b - a));
  });

  it('identifies English, German, French and Spanish', async () => {
    const cases: Record<string, string> = {
      eng: 'The weather is lovely today and we are going for a walk in the park.',
      deu: 'Das Wetter ist heute schön und wir gehen im Park spazieren.',
      fra: "Il fait beau aujourd'hui et nous allons nous promener dans le parc.",
      spa: 'Hace buen tiempo hoy y vamos a pasear por el parque.',
    };
    const got = await Promise.all(Object.values(cases).map((text) => predict<{ language: string; confidence: number }>('language.detect-language', { text })));
    expect(got.map((p) => p.output.language)).toEqual(Object.keys(cases));
    for (const p of got) expect(p.output.confidence).toBeGreaterThan(0.5);
  });
});

describe('forecast.auto', () => {
  it('forecasts the last year of AirPassengers from the first 132 months within 10% MAPE', async () => {
    const train = AIR_PASSENGERS.slice(0, 132);
    const actual = AIR_PASSENGERS.slice(132);
    const p = await predict<{ model: string; forecast: Array<{ step: number; value: number; lower80: number; upper80: number; lower95: number; upper95: number }>; backtest: { mape: number } }>(
      'forecast.auto', { series: train, horizon: 12 });
    const f = p.output.forecast;
    expect(f.map((x) => x.step)).toEqual(Array.from({ length: 12 }, (_, i) => i + 1));
    const mape = (100 / 12) * actual.reduce((s, a, i) => s + Math.abs(f[i]!.value - a) / a, 0);
    expect(mape).toBeLessThan(10);
    const inside = actual.filter((a, i) => f[i]!.lower95 <= a && a <= f[i]!.upper95).length;
    expect(inside).toBeGreaterThanOrEqual(9); // most of the 12 actuals inside the 95% interval
    for (const x of f) expect(x.lower95 <= x.lower80 && x.lower80 <= x.value && x.value <= x.upper80 && x.upper80 <= x.upper95).toBe(true);
    expect(p.output.backtest.mape).toBeGreaterThan(0);
  });
});

describe('bad input through GraphQL', () => {
  it('answers BAD_USER_INPUT naming the field, and creates no job', async () => {
    const png = Buffer.from((await textPng(['x'])), 'base64');
    const gif = (await sharp(png).gif().toBuffer()).toString('base64');
    const series = AIR_PASSENGERS.slice(0, 24);
    const cases: Array<[string, unknown, string, RegExp?]> = [
      ['vision.faces', { image: Buffer.from('hello, this is plain text and not an image').toString('base64') }, 'input.image', /not a decodable image/],
      ['vision.detect-objects', { image: gif }, 'input.image', /unsupported media type gif/],
      ['vision.ocr', { image: `data:text/plain;base64,${Buffer.from('some text').toString('base64')}` }, 'input.image', /not an image/],
      ['vision.moderate', { image: 'not base64 at all!' }, 'input.image', /not base64/],
      ['vision.moderate', { image: png.toString('base64'), threshold: 0.5 }, 'input.threshold', /unknown field/],
      ['vision.faces', {}, 'input.image'],
      ['language.sentiment', { text: '' }, 'input.text', /empty/],
      ['language.entities', { text: '  \n\t ' }, 'input.text', /whitespace/],
      ['language.keywords', { text: 'hello', maxResults: 0 }, 'input.maxResults'],
      ['language.detect-language', { text: 42 }, 'input.text'],
      ['language.sentiment', { text: 'fine', mood: 'happy' }, 'input.mood', /unknown field/],
      ['forecast.auto', { series: [1, 2, 3, 4, 5], horizon: 3 }, 'input.series', /at least 12 points/],
      ['forecast.auto', { series: [1, 2, 'three', ...series], horizon: 3 }, 'input.series[2]'],
      ['forecast.auto', { series, horizon: 0 }, 'input.horizon'],
      ['forecast.auto', { series, horizon: 366 }, 'input.horizon'],
      ['forecast.auto', { series, horizon: 3, extra: true }, 'input.extra', /unknown field/],
      ['system.echo', { nope: 1 }, 'input.nope', /unknown field/],
    ];
    const jobsBefore = (await owner.query('SELECT count(*)::int AS n FROM jobs WHERE tenant_id = $1', [t.tenantId])).rows[0].n;
    for (const [service, input, field, message] of cases) {
      const got = await refused(service, input);
      const label = `${service} ${JSON.stringify(input).slice(0, 60)}`;
      expect({ label, code: got.code, field: got.field }).toEqual({ label, code: 'BAD_USER_INPUT', field });
      if (message) expect({ label, message: got.message }).toEqual({ label, message: expect.stringMatching(message) });
    }
    const jobsAfter = (await owner.query('SELECT count(*)::int AS n FROM jobs WHERE tenant_id = $1', [t.tenantId])).rows[0].n;
    expect(jobsAfter).toBe(jobsBefore);
  });
});

describe('the asynchronous path', () => {
  it('returns at once with wait 0 and can be polled to SUCCEEDED', async () => {
    const text = 'Grace Hopper worked for the United States Navy in Washington.';
    const res = await gql(PREDICT, { input: { service: 'language.entities', input: { text }, wait: 0 } });
    expect(res.errors).toBeUndefined();
    const first = res.data.predict as PredictionView<unknown>;
    expect(['QUEUED', 'ADMITTED', 'RUNNING']).toContain(first.status);
    expect(first.output).toBeNull();
    let done: PredictionView<{ entities: Array<{ text: string; type: string; start: number; end: number }> }> | undefined;
    await waitFor(async () => {
      done = (await gql(PREDICTION, { id: first.id })).data.prediction;
      return done!.status === 'SUCCEEDED';
    }, 20_000, 'the prediction to succeed');
    expect(done!).toMatchObject({ id: first.id, progress: 1, error: null, node: { id: 'svc-1' } });
    expect(done!.output.entities.find((e) => e.type === 'PERSON')?.text).toBe('Grace Hopper');
    for (const e of done!.output.entities) expect(text.slice(e.start, e.end)).toBe(e.text);
    expect(done!.metrics).toMatchObject({ loadMs: expect.any(Number), runMs: expect.any(Number) });
    succeeded.set(first.id, { service: 'language.entities', seconds: done!.usage.seconds });
  });
});

describe('cancellation', () => {
  it('cancels a QUEUED service call: it never runs and is never billed', async () => {
    // Fill the node's two slots with long echo jobs so the next call has to queue.
    const blockers: string[] = [];
    for (let i = 0; i < 2; i++) {
      const res = await gql(PREDICT, { input: { service: 'system.echo', input: { sleepMs: 30_000 }, wait: 0 } });
      blockers.push(res.data.predict.id);
    }
    await waitFor(async () => {
      const statuses = await Promise.all(blockers.map(async (id) => (await gql(PREDICTION, { id })).data.prediction.status));
      return statuses.every((s) => s === 'RUNNING');
    }, 10_000, 'both echo jobs to run');

    const res = await gql(PREDICT, { input: { service: 'vision.moderate', input: { image: sample(2) }, wait: 0 } });
    expect(res.errors).toBeUndefined();
    const id = res.data.predict.id as string;
    expect(res.data.predict.status).toBe('QUEUED');
    await new Promise((r) => setTimeout(r, 500)); // a few admission rounds: still no free slot
    expect((await gql(PREDICTION, { id })).data.prediction.status).toBe('QUEUED');

    const canceled = await gql(CANCEL, { id });
    expect(canceled.errors).toBeUndefined();
    expect(canceled.data.cancelPrediction).toEqual({ id, status: 'CANCELED' });

    // Free the slots; the canceled call must not be admitted into them.
    for (const b of blockers) expect((await gql(CANCEL, { id: b })).data.cancelPrediction.status).toBe('CANCELED');
    await waitFor(async () => (await Promise.all(blockers.map(ledger))).every((rows) => rows.length === 1), 10_000, 'the echo jobs to end on the node');
    await new Promise((r) => setTimeout(r, 500));
    const after = (await gql(PREDICTION, { id })).data.prediction as PredictionView<unknown>;
    expect(after).toMatchObject({ status: 'CANCELED', error: { code: 'CANCELED' }, output: null, startedAt: null, usage: { seconds: 0 } });
    expect(await ledger(id)).toEqual([]);
    const { rows: [job] } = await owner.query('SELECT status, attempt, node_id FROM jobs WHERE id = $1', [id]);
    expect(job).toEqual({ status: 'CANCELED', attempt: 0, node_id: null });
    // The node is free again.
    await predict('system.echo', { message: 'after cancel' }, 10);
  }, 40_000);
});

describe('metering', () => {
  it('every successful call has exactly one billable ledger row, matching the usage the API reported', async () => {
    const ids = [...succeeded.keys()];
    expect(ids.length).toBeGreaterThanOrEqual(25);
    const { rows } = await owner.query(
      `SELECT job_id, count(*)::int AS n, count(*) FILTER (WHERE billable)::int AS billable, sum(billable_ms)::int AS ms
         FROM usage_ledger WHERE job_id = ANY($1::uuid[]) GROUP BY job_id`, [ids]);
    const byJob = new Map(rows.map((r) => [r.job_id as string, r]));
    for (const [id, { service, seconds }] of succeeded) {
      const row = byJob.get(id);
      expect({ id, service, n: row?.n, billable: row?.billable, ms: row?.ms }).toEqual({ id, service, n: 1, billable: 1, ms: Math.round(seconds * 1000) });
    }
  });

  it('bills every successful call more than zero seconds', () => {
    // Fast calls that run inline on the node (detect-language, short sentiment/keywords, echo) finish
    // within the millisecond the agent stamps startedAt in, and are then billed 0 ms.
    const free = [...succeeded].filter(([, u]) => !(u.seconds > 0)).map(([id, u]) => `${u.service} ${id}`);
    expect(free).toEqual([]);
  });
});
