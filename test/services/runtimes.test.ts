import { randomUUID } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import { getService, prepareInput } from '../../src/modules/services/catalog';
import { ImageInputStore } from '../../src/modules/services/image-store';
import { checkImage } from '../../src/modules/services/images';
import { INPUT_KEY_RE, LocalArtifactStore, artifactKeys, checkKey, type ArtifactStore } from '../../src/modules/training/artifact-store';
import { createRuntimeHost, maxRunMsFor, runsInline, type JobContext, type RunResult, type RuntimeHost } from '../../workers/node-agent/runtimes';
import { resolveInput } from '../../workers/node-agent/runtimes/inputs';
import { closeOcr, loadOcr, ocr, ocrLoaded } from '../../workers/node-agent/runtimes/vision/ocr';
import { initTf, tf } from '../../workers/node-agent/runtimes/vision/tf';
import { AIR_PASSENGERS } from '../fixtures/air-passengers';

/** Real models, loaded once for the file; vision/OCR/forecast run in the host's worker threads. */
let host: RuntimeHost;
/** The artifact store the host reads stored input images from (a temporary directory). */
const dataDir = mkdtempSync(join(tmpdir(), 'nimbus-runtimes-test-'));
const store = new LocalArtifactStore(join(dataDir, 'artifacts'));
beforeAll(() => {
  host = createRuntimeHost({ threads: 2, store });
});
afterAll(async () => {
  await host.close();
  rmSync(dataDir, { recursive: true, force: true });
});

const ctx = (over: Partial<JobContext> = {}): JobContext => ({
  signal: new AbortController().signal,
  reportProgress: () => undefined,
  log: () => undefined,
  ...over,
});

/** Validates raw input like the API does, runs it, and checks the output against the contract schema. */
async function call<T>(serviceId: string, raw: unknown, c: JobContext = ctx()): Promise<{ output: T; metrics: RunResult['metrics'] }> {
  const input = await prepareInput(serviceId, raw);
  const result = await host.run(serviceId, input, c);
  const schema = getService(serviceId)?.outputSchema;
  expect(schema?.safeParse(result.output).error).toBeUndefined();
  return result as { output: T; metrics: RunResult['metrics'] };
}

const sample = (i: number) => readFileSync(join('node_modules/@vladmandic/face-api/demo', `sample${i}.jpg`)).toString('base64');

interface Box { x: number; y: number; width: number; height: number }

describe('vision', () => {
  // Counted by eye on the six face-api demo photos.
  const FACES: Record<number, number> = { 1: 3, 2: 3, 3: 3, 4: 4, 5: 5, 6: 4 };

  it('counts the faces in the face-api sample photos', async () => {
    const counts: Record<number, number> = {};
    const jobs = Object.keys(FACES).map(async (k) => {
      const i = Number(k);
      const { output } = await call<{ faces: Array<{ box: Box; age: number; gender: string; emotion: string; emotions: Record<string, number>; embedding?: number[] }> }>(
        'vision.faces', { image: sample(i), embeddings: i === 1 });
      counts[i] = output.faces.length;
      for (const f of output.faces) {
        expect(f.age).toBeGreaterThan(10);
        expect(f.age).toBeLessThan(60);
        expect(Object.keys(f.emotions).length).toBeGreaterThanOrEqual(5);
        expect(f.emotions[f.emotion]).toBe(Math.max(...Object.values(f.emotions)));
        expect(f.embedding?.length ?? 0).toBe(i === 1 ? 1024 : 0);
      }
    });
    await Promise.all(jobs); // six jobs over two threads: exercises the host queue
    expect(counts).toEqual(FACES);
  });

  it('finds the same faces in a photo too large to hand Human whole (shrunk first), with boxes in the original\'s pixels', async () => {
    type Faces = { faces: Array<{ box: Box }> };
    const small = (await call<Faces>('vision.faces', { image: sample(1) })).output.faces;
    const meta = await sharp(Buffer.from(sample(1), 'base64')).metadata();
    const factor = Math.ceil(2600 / Math.max(meta.width!, meta.height!)); // past the 2,048 px it hands Human
    const big = await sharp(Buffer.from(sample(1), 'base64')).resize(meta.width! * factor, meta.height! * factor).jpeg().toBuffer();
    const large = (await call<Faces>('vision.faces', { image: big.toString('base64') })).output.faces;
    expect(large).toHaveLength(small.length);
    const byX = (f: Array<{ box: Box }>) => [...f].sort((p, q) => p.box.x - q.box.x);
    byX(large).forEach((f, i) => {
      const s = byX(small)[i]!.box;
      // The same face, in pixels of the enlarged photo: about `factor` times the small one's box.
      expect(Math.abs(f.box.x - s.x * factor)).toBeLessThan(0.1 * s.width * factor + 5);
      expect(Math.abs(f.box.width - s.width * factor)).toBeLessThan(0.2 * s.width * factor + 5);
      expect(f.box.x + f.box.width).toBeLessThanOrEqual(meta.width! * factor);
    });
  });

  it('detects people with boxes inside the image, and reports warm calls with loadMs 0', async () => {
    const first = await call<{ objects: Array<{ label: string; score: number; box: Box }>; width: number; height: number }>(
      'vision.detect-objects', { image: sample(6), minScore: 0.3 });
    const { output, metrics } = first;
    expect({ width: output.width, height: output.height }).toEqual({ width: 1920, height: 1537 });
    const people = output.objects.filter((o) => o.label === 'person');
    expect(people.length).toBeGreaterThanOrEqual(1);
    for (const o of output.objects) {
      expect(o.score).toBeGreaterThanOrEqual(0.3);
      expect(o.box.x + o.box.width).toBeLessThanOrEqual(1920);
      expect(o.box.y + o.box.height).toBeLessThanOrEqual(1537);
    }
    expect(metrics.runMs).toBeGreaterThan(0);
    const again = await call<{ objects: unknown[] }>('vision.detect-objects', { image: sample(6), minScore: 0.3, maxResults: 2 });
    expect(again.output.objects.length).toBeLessThanOrEqual(2);
    expect(again.metrics.loadMs).toBe(0); // same thread preferred: model already warm
  });

  it('moderates: five labels summing to ~1, an ordinary photo is not flagged', async () => {
    const { output } = await call<{ flagged: boolean; labels: Array<{ label: string; score: number }> }>('vision.moderate', { image: sample(1) });
    expect(output.labels.map((l) => l.label).sort()).toEqual(['drawing', 'hentai', 'neutral', 'porn', 'sexy']);
    expect(output.labels.reduce((a, l) => a + l.score, 0)).toBeCloseTo(1, 2);
    expect(output.labels.map((l) => l.score)).toEqual([...output.labels.map((l) => l.score)].sort((a, b) => b - a));
    expect(output.labels[0]?.label).toBe('neutral');
    expect(output.flagged).toBe(false);
  });

  it('reads text from a rendered PNG', async () => {
    const svg = `<svg xmlns="http://www.w3.org/2000/svg" width="900" height="260"><rect width="100%" height="100%" fill="white"/>
      <text x="30" y="90" font-family="DejaVu Sans, sans-serif" font-size="48">Invoice 4711 paid</text>
      <text x="30" y="190" font-family="DejaVu Sans, sans-serif" font-size="48">Nimbus reads text</text></svg>`;
    const png = await sharp(Buffer.from(svg)).png().toBuffer();
    const progress: number[] = [];
    const { output } = await call<{ text: string; confidence: number; lines: Array<{ text: string; box: Box }> }>(
      'vision.ocr', { image: png.toString('base64') }, ctx({ reportProgress: (p) => progress.push(p) }));
    expect(output.text).toBe('Invoice 4711 paid\nNimbus reads text');
    expect(output.lines.map((l) => l.text)).toEqual(['Invoice 4711 paid', 'Nimbus reads text']);
    expect(output.lines[0]?.box.y).toBeLessThan(output.lines[1]?.box.y ?? 0);
    expect(output.confidence).toBeGreaterThan(80);
    expect(progress.length).toBeGreaterThan(0);
  });
});

describe('stored input images (image: { ref }, as the API submits jobs)', () => {
  const tenantId = randomUUID();
  const images = new ImageInputStore(store);
  const stored = async (base64: string) => images.put(tenantId, await checkImage(base64));

  it('keys inputs under the tenant, in a shape checkKey accepts and the node recognises', async () => {
    const ref = await stored(sample(1));
    expect(ref).toEqual({ ref: expect.stringMatching(new RegExp(`^inputs/${tenantId}/[0-9a-f-]{36}$`)), mediaType: 'image/jpeg', width: 1920, height: 1280, bytes: 144516 });
    expect(checkKey(ref.ref)).toBe(ref.ref);
    expect(INPUT_KEY_RE.test(artifactKeys.input(tenantId, randomUUID()))).toBe(true);
    for (const bad of ['inputs/x/y', `tenants/${tenantId}/datasets/d/uploads/u`, `inputs/${tenantId}/../${randomUUID()}`, `inputs/${tenantId}/${randomUUID()}/more`]) {
      expect({ bad, ok: INPUT_KEY_RE.test(bad) }).toEqual({ bad, ok: false });
    }
    expect((await store.get(ref.ref)).equals(Buffer.from(sample(1), 'base64'))).toBe(true);
  });

  it('answers a stored reference exactly as the inline image (moderation and OCR)', async () => {
    const inline = await call<{ labels: unknown[] }>('vision.moderate', { image: sample(1) });
    const fromStore = await host.run('vision.moderate', { image: await stored(sample(1)) }, ctx());
    expect(fromStore.output).toEqual(inline.output);
    const svg = `<svg xmlns="http://www.w3.org/2000/svg" width="700" height="160"><rect width="100%" height="100%" fill="white"/>
      <text x="30" y="90" font-family="DejaVu Sans, sans-serif" font-size="48">Stored 2024 input</text></svg>`;
    const png = (await sharp(Buffer.from(svg)).png().toBuffer()).toString('base64');
    const ocr = await host.run('vision.ocr', { image: await stored(png), language: 'eng' }, ctx());
    expect((ocr.output as { text: string }).text).toBe('Stored 2024 input');
  });

  it('loads the bytes into an ArrayBuffer of their own, to be moved to the thread, and leaves other inputs alone', async () => {
    const ref = await stored(sample(2));
    const { input, transfer } = await resolveInput({ image: ref }, () => store);
    const image = (input as { image: { data: Uint8Array; ref?: string; bytes?: number } }).image;
    expect(image).toEqual({ data: expect.any(Uint8Array), mediaType: 'image/jpeg', width: ref.width, height: ref.height });
    expect(image.data.byteLength).toBe(ref.bytes);
    expect(image.data.buffer.byteLength).toBe(ref.bytes);
    expect(transfer).toEqual([image.data.buffer]);
    // A small object may come back as a slice of Node's shared buffer pool, which must never be transferred.
    const pooled = Buffer.from('tiny');
    expect(pooled.buffer.byteLength).toBeGreaterThan(pooled.length);
    const tiny = await resolveInput({ image: { ref: artifactKeys.input(tenantId, randomUUID()), bytes: 4 } }, () => ({ get: async () => pooled }) as unknown as ArtifactStore);
    const data = (tiny.input as { image: { data: Uint8Array } }).image.data;
    expect({ bytes: Buffer.from(data).toString(), own: data.buffer.byteLength, transferred: tiny.transfer[0] === data.buffer }).toEqual({ bytes: 'tiny', own: 4, transferred: true });
    const inline = { image: { base64: sample(3), mediaType: 'image/jpeg', width: 1, height: 1 } };
    for (const other of [inline, { text: 'hello' }, null]) expect(await resolveInput(other, () => store)).toEqual({ input: other, transfer: [] });
  });

  it('fails a reference whose object is gone with INPUT_EXPIRED, and keeps serving', async () => {
    const ref = await stored(sample(1));
    await store.delete(ref.ref);
    await expect(host.run('vision.moderate', { image: ref }, ctx())).rejects.toMatchObject({ code: 'INPUT_EXPIRED', message: expect.stringMatching(/no longer stored/) });
    const again = await host.run('vision.moderate', { image: await stored(sample(1)) }, ctx());
    expect((again.output as { labels: Array<{ label: string }> }).labels[0]?.label).toBe('neutral');
  });

  it('refuses references outside the inputs namespace without reading the store, and hides store errors', async () => {
    const reads: string[] = [];
    const spy = { get: async (k: string) => { reads.push(k); throw new Error('secret bucket nimbus-prod-eu at 10.0.0.7 refused'); } } as unknown as ArtifactStore;
    const other = createRuntimeHost({ threads: 1, services: ['vision.moderate'], store: spy });
    try {
      for (const ref of ['../../etc/passwd', `tenants/${tenantId}/datasets/d/uploads/u`, 42]) {
        await expect(other.run('vision.moderate', { image: { ref, mediaType: 'image/png', width: 1, height: 1, bytes: 1 } }, ctx()))
          .rejects.toMatchObject({ code: 'INVALID_INPUT' });
      }
      expect(reads).toEqual([]);
      // Another tenant's input, as a job of this tenant: refused before the store is read.
      const theirs = artifactKeys.input(randomUUID(), randomUUID());
      await expect(other.run('vision.moderate', { image: { ref: theirs, mediaType: 'image/png', width: 1, height: 1, bytes: 1 } }, ctx({ tenantId })))
        .rejects.toMatchObject({ code: 'INVALID_INPUT', message: expect.stringMatching(/tenant/) });
      expect(reads).toEqual([]);
      const ref = artifactKeys.input(tenantId, randomUUID());
      const err = await other.run('vision.moderate', { image: { ref, mediaType: 'image/png', width: 1, height: 1, bytes: 1 } }, ctx()).catch((e: Error) => e);
      expect(err).toMatchObject({ code: 'INPUT_UNAVAILABLE' });
      expect((err as Error).message).not.toMatch(/secret|10\.0\.0\.7/);
      expect(reads).toEqual([ref]);
    } finally {
      await other.close();
    }
  });
});

describe('language', () => {
  it('gives sentiment the right sign', async () => {
    const pos = await call<{ score: number; label: string }>('language.sentiment', { text: 'I absolutely love this wonderful product. It works great!' });
    const neg = await call<{ score: number; label: string; sentences: unknown[] }>('language.sentiment', { text: 'This is terrible. I hate it and the support was awful.' });
    expect(pos.output.score).toBeGreaterThan(0.2);
    expect(pos.output.label).toBe('positive');
    expect(neg.output.score).toBeLessThan(-0.2);
    expect(neg.output.label).toBe('negative');
    expect(neg.output.sentences).toHaveLength(2);
  });

  it('finds a person, a place and an organisation with exact offsets', async () => {
    const text = 'Yesterday Angela Merkel flew to Paris to meet the board of Microsoft Corp., paying $300 on 12 March 2024 (see https://example.com/x).';
    const { output } = await call<{ entities: Array<{ text: string; type: string; start: number; end: number }> }>('language.entities', { text });
    const byType = (t: string) => output.entities.filter((e) => e.type === t).map((e) => e.text);
    expect(byType('PERSON')).toContain('Angela Merkel');
    expect(byType('PLACE')).toContain('Paris');
    expect(byType('ORGANIZATION').some((o) => o.startsWith('Microsoft'))).toBe(true);
    expect(byType('MONEY')).toContain('$300');
    expect(byType('URL')).toEqual(['https://example.com/x']);
    for (const e of output.entities) expect(text.slice(e.start, e.end)).toBe(e.text);
    const spans = output.entities.map((e) => [e.start, e.end]);
    spans.forEach(([s], i) => i > 0 && expect(s).toBeGreaterThanOrEqual(spans[i - 1]?.[1] ?? 0)); // sorted, no overlaps
  });

  it('counts entity offsets in characters (code points), as the contract says, also after emoji', async () => {
    const text = '😀🚀 Angela Merkel flew to Paris. 👍 Then Microsoft Corp. paid $300.';
    const { output } = await call<{ entities: Array<{ text: string; type: string; start: number; end: number }> }>('language.entities', { text });
    const chars = [...text];
    const merkel = output.entities.find((e) => e.text === 'Angela Merkel');
    expect(merkel).toMatchObject({ type: 'PERSON', start: 3, end: 16 });
    for (const e of output.entities) expect(chars.slice(e.start, e.end).join('')).toBe(e.text);
    expect(output.entities.find((e) => e.text === 'Paris')).toBeDefined();
    expect(output.entities.some((e) => e.type === 'MONEY' && e.text === '$300')).toBe(true);
  });

  it('extracts keywords sorted by score', async () => {
    const text = 'Electric cars need charging stations. The city builds new charging stations for electric cars and buses.';
    const { output } = await call<{ keywords: Array<{ text: string; score: number }> }>('language.keywords', { text, maxResults: 3 });
    expect(output.keywords.length).toBeLessThanOrEqual(3);
    expect(output.keywords.map((k) => k.text.toLowerCase())).toEqual(expect.arrayContaining(['charging stations']));
    expect(output.keywords.map((k) => k.score)).toEqual([...output.keywords.map((k) => k.score)].sort((a, b) => b - a));
  });

  it('identifies English, German, French and Spanish, and und for too-short text', async () => {
    const cases: Record<string, string> = {
      eng: 'The weather is lovely today and we are going for a walk in the park.',
      deu: 'Das Wetter ist heute schön und wir gehen im Park spazieren.',
      fra: "Il fait beau aujourd'hui et nous allons nous promener dans le parc.",
      spa: 'Hace buen tiempo hoy y vamos a pasear por el parque.',
    };
    for (const [lang, text] of Object.entries(cases)) {
      const { output } = await call<{ language: string; confidence: number }>('language.detect-language', { text });
      expect({ text, language: output.language }).toEqual({ text, language: lang });
      expect(output.confidence).toBeGreaterThan(0.5);
    }
    const { output } = await call<{ language: string; confidence: number }>('language.detect-language', { text: 'ok' });
    expect(output).toMatchObject({ language: 'und', confidence: 0 });
  });

  it('runs short texts on the main thread fast and long ones in a thread', async () => {
    await call('language.sentiment', { text: 'warm up' });
    const short = await call('language.sentiment', { text: 'Good service, friendly staff.' });
    expect(short.metrics.queueMs).toBe(0);
    expect(short.metrics.runMs).toBeLessThan(20);
    expect(runsInline('language.sentiment', { text: 'Good service, friendly staff.' })).toBe(true);
    expect(runsInline('language.sentiment', { text: 'It was great. '.repeat(500) })).toBe(false);
    expect(runsInline('language.entities', { text: 'short' })).toBe(false);
    const long = await call<{ sentences: unknown[] }>('language.sentiment', { text: 'It was great. '.repeat(500) });
    expect(long.output.sentences).toHaveLength(500);
  });
});

describe('forecast.auto', () => {
  it('forecasts the last year of AirPassengers within 10% MAPE, actuals inside the 95% band', async () => {
    const train = AIR_PASSENGERS.slice(0, 132);
    const actual = AIR_PASSENGERS.slice(132);
    const { output } = await call<{ model: string; forecast: Array<{ step: number; value: number; lower95: number; upper95: number; lower80: number; upper80: number }>; backtest: { mape: number; smape: number } }>(
      'forecast.auto', { series: train, horizon: 12 });
    expect(output.forecast.map((f) => f.step)).toEqual(Array.from({ length: 12 }, (_, i) => i + 1));
    const mape = (100 / 12) * actual.reduce((s, a, i) => s + Math.abs((output.forecast[i]?.value ?? 0) - a) / a, 0);
    expect(mape).toBeLessThan(10);
    const inside = actual.filter((a, i) => (output.forecast[i]?.lower95 ?? Infinity) <= a && a <= (output.forecast[i]?.upper95 ?? -Infinity)).length;
    expect(inside).toBeGreaterThanOrEqual(10);
    for (const f of output.forecast) expect(f.lower95 <= f.lower80 && f.lower80 <= f.value && f.value <= f.upper80 && f.upper80 <= f.upper95).toBe(true);
    expect(output.model).toMatch(/\[12\]/); // found the yearly season on its own
    expect(output.backtest.mape).toBeGreaterThan(0);
    expect(output.backtest.mape).toBeLessThan(10);
  });

  it('follows a straight trend without seasonality', async () => {
    const { output } = await call<{ forecast: Array<{ value: number }> }>('forecast.auto', { series: Array.from({ length: 24 }, (_, i) => 10 + 2 * i), horizon: 3 });
    expect(output.forecast.map((f) => Math.round(f.value))).toEqual([58, 60, 62]);
  });
});

describe('system.echo and job control', () => {
  it('sleeps in even progress steps and echoes', async () => {
    const progress: number[] = [];
    const t0 = Date.now();
    const { output } = await call('system.echo', { message: { a: [1, 2] }, sleepMs: 200, progressSteps: 4 }, ctx({ reportProgress: (p) => progress.push(p) }));
    expect(Date.now() - t0).toBeGreaterThanOrEqual(190);
    expect(output).toEqual({ message: { a: [1, 2] } });
    expect(progress).toEqual([0.25, 0.5, 0.75, 1]);
  });

  it('fails with JOB_FAILED on request', async () => {
    await expect(call('system.echo', { fail: true })).rejects.toMatchObject({ code: 'JOB_FAILED' });
  });

  it('cancels a sleeping echo promptly with CANCELED', async () => {
    const ac = new AbortController();
    const t0 = Date.now();
    setTimeout(() => ac.abort(), 50);
    await expect(call('system.echo', { sleepMs: 10_000, progressSteps: 10 }, ctx({ signal: ac.signal }))).rejects.toMatchObject({ code: 'CANCELED' });
    expect(Date.now() - t0).toBeLessThan(1000);
  });

  it('cancels threaded jobs, queued or running, and keeps serving', async () => {
    const input = await prepareInput('vision.faces', { image: sample(5) });
    const ac = new AbortController();
    const jobs = [1, 2, 3, 4].map(() => host.run('vision.faces', input, ctx({ signal: ac.signal })));
    await new Promise((r) => setTimeout(r, 30)); // two running, two queued
    const t0 = Date.now();
    ac.abort();
    for (const j of jobs) await expect(j).rejects.toMatchObject({ code: 'CANCELED' });
    expect(Date.now() - t0).toBeLessThan(100);
    const after = await host.run('vision.faces', input, ctx());
    expect((after.output as { faces: unknown[] }).faces).toHaveLength(5);
  });

  it('rejects unknown services and undecodable payloads with a code', async () => {
    await expect(host.run('vision.nope', {}, ctx())).rejects.toMatchObject({ code: 'UNKNOWN_SERVICE' });
    const broken = { image: { base64: Buffer.from('not an image').toString('base64'), mediaType: 'image/png', width: 1, height: 1 } };
    await expect(host.run('vision.moderate', broken, ctx())).rejects.toMatchObject({ code: 'INVALID_INPUT', message: expect.stringMatching(/could not be decoded/) });
  });

  it('warms models in every thread so later calls report loadMs 0', async () => {
    await host.warm(['vision.moderate', 'language.detect-language']);
    const input = await prepareInput('vision.moderate', { image: sample(4) });
    const results = await Promise.all([1, 2, 3, 4].map(() => host.run('vision.moderate', input, ctx())));
    expect(results.map((r) => r.metrics.loadMs)).toEqual([0, 0, 0, 0]);
    expect(new Set(results.map((r) => JSON.stringify(r.output))).size).toBe(1); // deterministic across threads
  });
});

describe('worker threads: jobs that do not stop on their own', () => {
  // ~100k characters of named entities: compromise runs several seconds of synchronous CPU on it,
  // during which the thread reads no message (a cancel included).
  const LONG = 'Barack Obama visited Paris and met Angela Merkel at Google headquarters in London on Monday. '.repeat(1100).slice(0, 100_000);
  const SHORT = { text: 'Angela Merkel in Paris' };
  /** A grace far shorter than LONG's run (several seconds), so its thread is terminated, not waited for. */
  const GRACE_MS = 500;
  /** The grace a thread gets to stop on its own, plus slack for terminating and spawning a thread on a loaded machine. */
  const STARTS_WITHIN_MS = GRACE_MS + 1_500;
  const hosts: RuntimeHost[] = [];
  const entitiesHost = (maxRunMs?: number) => {
    const h = createRuntimeHost({ threads: 1, services: ['language.entities'], maxRunMs, stopGraceMs: GRACE_MS });
    hosts.push(h);
    return h;
  };
  afterAll(async () => {
    await Promise.all(hosts.map((h) => h.close()));
  });
  const names = (r: RunResult) => (r.output as { entities: Array<{ text: string }> }).entities.map((e) => e.text);

  it('a cancelled CPU-bound job gives its thread back: the next job starts within ~grace', async () => {
    const h = entitiesHost();
    await h.warm(['language.entities']);
    const cancelLong = async (meanwhile: () => Promise<void> | undefined = () => undefined) => {
      const ac = new AbortController();
      const first = h.run('language.entities', { text: LONG }, ctx({ signal: ac.signal })).then(() => null, (e: Error) => e);
      await new Promise((r) => setTimeout(r, 150)); // running, deep in synchronous work
      const other = meanwhile();
      ac.abort();
      expect(await first).toMatchObject({ code: 'CANCELED' }); // answered at once
      return { other }; // wrapped: an async function's result would wait for it
    };
    await cancelLong();
    const next = await h.run('language.entities', SHORT, ctx());
    expect(names(next)).toContain('Angela Merkel');
    expect(next.metrics.queueMs).toBeLessThan(STARTS_WITHIN_MS);
    // A fresh thread, which loads the models again: the terminated thread's were not assumed warm.
    expect(next.metrics.loadMs).toBeGreaterThan(0);

    // A warm-up the stopped thread had not got to moves to its replacement rather than failing.
    const { other: warming } = await cancelLong(() => h.warm(['language.entities']));
    await expect(warming).resolves.toBeUndefined();
    const warm = await h.run('language.entities', SHORT, ctx());
    expect({ entities: names(warm), loadMs: warm.metrics.loadMs }).toEqual({ entities: names(next), loadMs: 0 });
  });

  it('fails a job past its maximum run time with RUN_TIMEOUT, and its thread serves the next job', async () => {
    // Long enough for a cold thread to load compromise and run a short text (loading counts), far below LONG's run.
    const h = entitiesHost(2_000);
    const err = await h.run('language.entities', { text: LONG }, ctx()).then(() => null, (e: Error) => e);
    expect(err).toMatchObject({ code: 'RUN_TIMEOUT', message: expect.stringMatching(/maximum run time of 2000 ms/) });
    const next = await h.run('language.entities', SHORT, ctx());
    expect(names(next)).toContain('Angela Merkel');
    expect(next.metrics.queueMs).toBeLessThan(STARTS_WITHIN_MS);
  });

  it('caps inference at 10 min (echo sleeps at most that long) and training trials at the longest search budget', () => {
    expect(maxRunMsFor('language.entities')).toBe(600_000);
    expect(maxRunMsFor('model.predict')).toBe(600_000);
    expect(maxRunMsFor('training.trial')).toBe(24 * 60 * 60_000);
    expect(maxRunMsFor('vision.ocr', { maxRunMs: 5_000 })).toBe(5_000);
    expect(maxRunMsFor('training.trial', { maxRunMs: 5_000 })).toBe(24 * 60 * 60_000);
  });
});

describe('model loads: a failure is not kept', () => {
  const png = async (text: string) => {
    const svg = `<svg xmlns="http://www.w3.org/2000/svg" width="700" height="160"><rect width="100%" height="100%" fill="white"/>
      <text x="30" y="90" font-family="DejaVu Sans, sans-serif" font-size="48">${text}</text></svg>`;
    const bytes = await sharp(Buffer.from(svg)).png().toBuffer();
    return { image: { base64: bytes.toString('base64'), mediaType: 'image/png', width: 700, height: 160 } };
  };
  const noProgress = { reportProgress: () => undefined };
  const within = <T>(p: Promise<T>, ms: number) =>
    Promise.race([p, new Promise<never>((_, reject) => setTimeout(() => reject(new Error(`still pending after ${ms} ms`)), ms).unref())]);
  afterAll(() => closeOcr());

  // OCR is loaded on this (the test's) thread here, not in the host's worker threads.
  it('OCR: a failed load (missing language data) fails, and the next call loads again', async () => {
    await expect(within(loadOcr({ langPath: join(dataDir, 'no-such-lang') }), 10_000)).rejects.toThrow(/eng\.traineddata/);
    expect(ocrLoaded()).toBe(false);
    const { text } = await ocr(await png('Second try works'), noProgress);
    expect(text).toBe('Second try works');
    expect(ocrLoaded()).toBe(true);
  });

  it('OCR: a tesseract worker that exits fails the recognition in progress, and the next call loads again', async () => {
    const w = await loadOcr();
    const running = ocr(await png('Never read'), noProgress);
    await (w as unknown as { worker: { terminate(): Promise<number> } }).worker.terminate();
    await expect(within(running, 10_000)).rejects.toMatchObject({ code: 'MODEL_ERROR', message: expect.stringMatching(/tesseract/) });
    expect(ocrLoaded()).toBe(false);
    const { text } = await ocr(await png('Loaded again'), noProgress);
    expect(text).toBe('Loaded again');
  });

  it('tfjs: a failed backend start fails initTf, and the next call starts it (the file:// router registered once)', async () => {
    const setBackend = jest.spyOn(tf.engine(), 'setBackend').mockResolvedValueOnce(false);
    try {
      await expect(initTf()).rejects.toThrow(/wasm/);
      await initTf();
      expect(tf.getBackend()).toBe('wasm');
      expect(tf.io.getLoadHandlers('file:///models/x.json')).toHaveLength(1);
    } finally {
      setBackend.mockRestore();
    }
  });
});
