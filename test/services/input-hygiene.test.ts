import { createServer as createHttpServer } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import sharp from 'sharp';
import { prepareInput } from '../../src/modules/services/catalog';
import { AppError } from '../../src/platform/errors';
import { createRuntimeHost, type JobContext, type RuntimeHost } from '../../workers/node-agent/runtimes';
import { signUpTenant, startTestApi, type TestApi, type TestTenant } from '../support/api';
import { selfSigned } from '../support/net';

/**
 * Inputs that used to end as INTERNAL, a useless MODEL_ERROR or minutes of a worker thread:
 * each is refused as BAD_USER_INPUT naming the field, or answered in bounded time.
 */

const ctx = (signal = new AbortController().signal): JobContext => ({ signal, reportProgress: () => undefined, log: () => undefined });
const timeout = (ms: number) => new Promise<'timeout'>((r) => setTimeout(() => r('timeout'), ms).unref());

/** prepareInput's answer: the prepared input, or the AppError / other error it threw. */
const attempt = (serviceId: string, raw: unknown, opts?: Parameters<typeof prepareInput>[2]) =>
  prepareInput(serviceId, raw, opts).then((v) => ({ ok: true as const, v }), (e: unknown) => ({ ok: false as const, e }));

function listen(server: ReturnType<typeof createHttpServer>, host: string): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, host, () => resolve((server.address() as AddressInfo).port));
  });
}

// ---------------------------------------------------------------------------------------------

const tls = selfSigned();
(tls ? describe : describe.skip)('image URLs (safe-fetch.ts)', () => {
  let server: ReturnType<typeof createHttpsServer>;
  let base: string;
  beforeAll(async () => {
    server = createHttpsServer({ key: tls?.key, cert: tls?.cert }, (req, res) => {
      // Node's HTTP parser passes any header value through: the Location is not a valid URL.
      if (req.url === '/bad-redirect') res.writeHead(302, { location: 'https://[oops/cat.png' }).end();
      else res.writeHead(404).end();
    });
    const port = await listen(server as unknown as ReturnType<typeof createHttpServer>, '127.0.0.1');
    base = `https://localhost:${port}`;
  });
  afterAll(() => {
    server.closeAllConnections();
    server.close();
  });

  it('refuses a redirect to an invalid URL as BAD_USER_INPUT on input.image', async () => {
    const r = await attempt('vision.moderate', { image: `${base}/bad-redirect` }, { allowPrivateNetworks: true, tlsCa: tls?.cert });
    expect(r.ok).toBe(false);
    const e = (r as { e: unknown }).e;
    expect({ isAppError: e instanceof AppError, code: (e as AppError).code, field: (e as AppError).extensions?.field })
      .toEqual({ isAppError: true, code: 'BAD_USER_INPUT', field: 'input.image' });
  });
});

// ---------------------------------------------------------------------------------------------
describe('text Postgres cannot store (through GraphQL)', () => {
  let api: TestApi;
  let t: TestTenant;
  beforeAll(async () => {
    api = await startTestApi();
    t = await signUpTenant(api, 'Audit Inputs');
  }, 60_000);
  afterAll(async () => {
    await api?.close();
  });

  const PREDICT = `mutation Predict($input: PredictInput!) { predict(input: $input) { id status } }`;

  it.each([
    ['a NUL character (U+0000)', 'hello\u0000world, this is fine'],
    ['a lone surrogate (U+D800)', 'hello \ud800 world, this is fine'],
  ])('refuses text containing %s as BAD_USER_INPUT naming it, not INTERNAL at the insert', async (_what, text) => {
    const res = await api.gql(PREDICT, { input: { service: 'language.sentiment', input: { text }, wait: 0 } }, t.token);
    expect(res.errors?.[0]?.extensions).toMatchObject({ code: 'BAD_USER_INPUT', field: 'input.input.text' });
    // Keys too, anywhere in a job's JSON input.
    const key = await api.gql(PREDICT, { input: { service: 'system.echo', input: { message: { [`k${text.slice(5, 7)}`]: 1 } }, wait: 0 } }, t.token);
    expect(key.errors?.[0]?.extensions).toMatchObject({ code: 'BAD_USER_INPUT' });
  });
});

// ---------------------------------------------------------------------------------------------
describe('runtimes (workers/node-agent/runtimes)', () => {
  let host: RuntimeHost | undefined;
  afterEach(async () => {
    // Terminating the worker threads also stops a runaway synchronous job.
    await host?.close();
    host = undefined;
  });

  it('refuses for OCR an image wider than 32,767 px (within the 50 MP limit) as BAD_USER_INPUT on input.image', async () => {
    const wide = await sharp({ create: { width: 32_768, height: 8, channels: 3, background: '#fff' } }).png().toBuffer();
    const r = await attempt('vision.ocr', { image: wide.toString('base64') });
    expect(r.ok).toBe(false);
    expect((r as { e: unknown }).e).toBeInstanceOf(AppError);
    expect(((r as { e: AppError }).e).extensions).toMatchObject({ field: 'input.image' });
    // Other vision services read it.
    expect((await attempt('vision.moderate', { image: wide.toString('base64') })).ok).toBe(true);
  }, 60_000);

  it('answers sentiment on 60,000 characters without a space in seconds, not a minute (wink is quadratic in a run\'s length)', async () => {
    const text = `${'a1'.repeat(30_000)} ${'-'.repeat(20_000)} and this part is lovely.`;
    const services = ['language.sentiment', 'language.keywords', 'language.entities'];
    host = createRuntimeHost({ threads: 1, services });
    await host.warm(services);
    // 100,000 characters of prose take ~150 ms here; these runs took ~45 s and ~2 s before.
    for (const service of services) {
      const r = await attempt(service, { text });
      expect(r.ok).toBe(true);
      const got = await Promise.race([host.run(service, (r as { v: unknown }).v, ctx()).then(() => 'done'), timeout(10_000)]);
      expect({ service, got }).toEqual({ service, got: 'done' });
    }
  }, 60_000);

  it('forecasts a long season (500 on 1,200 points) in seconds, not minutes: seasonal state-space models are fitted up to a season of 24', async () => {
    const series = Array.from({ length: 1200 }, (_, i) => 100 + 10 * Math.sin((2 * Math.PI * i) / 500) + ((i * 7919) % 13) / 13);
    const r = await attempt('forecast.auto', { series, horizon: 10, seasonality: 500 });
    expect(r.ok).toBe(true);
    host = createRuntimeHost({ threads: 1, services: ['forecast.auto'] });
    await host.warm(['forecast.auto']);
    // ETS[500] alone took ~2 minutes here; MSTL and the seasonal naive model take well under a second.
    const got = await Promise.race([host.run('forecast.auto', (r as { v: unknown }).v, ctx()), timeout(20_000)]);
    expect(got).not.toBe('timeout');
    const out = (got as { output: { model: string; forecast: unknown[] } }).output;
    expect(out.forecast).toHaveLength(10);
    expect(out.model).not.toMatch(/^(ETS|SARIMA)[^+]*\[500\]/);
  }, 60_000);
});
