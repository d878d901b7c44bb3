import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import Stripe from 'stripe';
import { ApiError, newId, parseForm, type Params, Reader } from './codec';
import { Faults, RateLimiter, type FaultMode, type FaultRule } from './faults';
import { Fixtures } from './fixtures';
import { Invoicing, type FinalizeOptions } from './invoicing';
import { Metering } from './metering';
import type { EventObj, FakeStripeState, InvoiceObj } from './objects';
import { buildRoutes, type Route } from './routes';
import { Store } from './store';

export interface FakeStripeOptions {
  /** 0 (an ephemeral port) by default, so test files can each run their own. */
  port?: number;
  host?: string;
  /** Signs `emitWebhook` events; `whsec_fake_stripe_0000` by default. */
  webhookSecret?: string;
  /** Where `emitWebhook` POSTs (settable later through `webhookUrl`). */
  webhookUrl?: string;
  /** Stripe's example objects used as base shapes; see fixtures.ts for the default locations. */
  fixturesPath?: string;
  /** Refuse meter event requests (v1, v2 and stream) beyond this rate with a 429, like Stripe's limiter. */
  meterEventRateLimitPerSecond?: number;
  /** Milliseconds since the epoch as the fake sees them (periods, timestamp limits, dedup window, sessions). */
  clock?: () => number;
  /** Keep every request in `requests` (true by default); benchmarks sending millions of events turn it off. */
  recordRequests?: boolean;
}

export interface RecordedRequest {
  method: string;
  /** Without the query string. */
  path: string;
  query: Params;
  /** Decoded form (v1) or JSON (v2) body. */
  body: Params;
  /** Lower-case names. */
  headers: Record<string, string>;
  idempotencyKey: string | undefined;
  /** 0 when the connection was dropped without an answer. */
  status: number;
  /** Set when an injected fault or the rate limiter handled the request. */
  fault: FaultMode | 'rate_limited' | undefined;
  at: Date;
}

export interface FakeStripe {
  url: string;
  host: string;
  port: number;
  webhookSecret: string;
  webhookUrl: string | undefined;
  /** A real SDK client pointed here; `maxNetworkRetries` is 0 unless `config` says otherwise. */
  client(apiKey?: string, config?: Stripe.StripeConfig): Stripe;
  requests: RecordedRequest[];
  injectFaults(rule: FaultRule): void;
  clearFaults(): void;
  state: FakeStripeState;
  /** Sum of the accepted (deduplicated) event values, events timestamped in [from, to). */
  meterTotal(meterIdOrEventName: string, customerId: string, from?: Date, to?: Date): number;
  /** A finalized invoice for the customer's previous period (or `options.period`), so invoice lists have content. */
  finalizeInvoice(customerId: string, options?: FinalizeOptions): InvoiceObj;
  /** Ends every meter event session now, to exercise the `temporary_session_expired` path. */
  expireMeterEventSessions(): void;
  /** POSTs a signed `type` event wrapping `dataObject` to `webhookUrl`. */
  emitWebhook(type: string, dataObject: object): Promise<{ status: number; body: string }>;
  close(): Promise<void>;
}

/** A `Stripe-Signature` header for `payload`, as Stripe signs webhook deliveries. */
export function signPayload(payload: string, secret: string, timestamp?: number): string {
  return Stripe.webhooks.generateTestHeaderString({ payload, secret, timestamp });
}

interface Answer { status: number; body: object; headers: Record<string, string> }

const IDEMPOTENT_METHODS = new Set(['POST', 'DELETE']);
/** Stripe keeps keys for 24 h; the fake keeps the latest ones so that long benchmarks stay in bounded memory. */
const IDEMPOTENCY_KEYS_KEPT = 50_000;

/**
 * An HTTP server speaking the part of Stripe's API Nimbus uses, for the real `stripe` SDK to talk to
 * (`new Stripe(key, { host, port, protocol: 'http' })`). The SDK sends v2 meter event streams, normally
 * addressed to meter-events.stripe.com, to the same configured host (`resolveBaseAddress` keeps a custom
 * `host` for every API base), so one server answers everything.
 */
export async function startFakeStripe(opts: FakeStripeOptions = {}): Promise<FakeStripe> {
  const clock = opts.clock ?? Date.now;
  const store = new Store(new Fixtures(opts.fixturesPath), clock);
  const metering = new Metering(store);
  const invoicing = new Invoicing(store, metering);
  const routes = buildRoutes(store, metering, invoicing);
  const faults = new Faults();
  const limiter = opts.meterEventRateLimitPerSecond ? new RateLimiter(opts.meterEventRateLimitPerSecond) : undefined;
  const requests: RecordedRequest[] = [];
  const idempotent = new Map<string, { fingerprint: string; answer: Answer }>();

  function route(method: string, path: string): { route: Route; ids: string[] } | undefined {
    for (const r of routes) {
      const m = r.method === method ? r.pattern.exec(path) : null;
      if (m) return { route: r, ids: m.slice(1).map(decodeURIComponent) };
    }
    return undefined;
  }

  /** Everything between the decoded request and the answer: auth, rate limit, idempotency, the endpoint. */
  function answer(rec: RecordedRequest, apiKey: string | undefined): Answer {
    const found = route(rec.method, rec.path);
    const auth = found?.route.auth ?? 'v1';
    if (auth === 'stream') metering.authenticateStream(apiKey);
    else if (!apiKey) {
      throw new ApiError(401, 'invalid_request_error', "You did not provide an API key. You need to provide your API key in the Authorization header, using Bearer auth (e.g. 'Authorization: Bearer YOUR_SECRET_KEY').");
    } else if (!/^sk_\S+$/.test(apiKey)) {
      throw new ApiError(401, 'invalid_request_error', `Invalid API Key provided: ${apiKey.slice(0, 8)}****`, 'invalid_api_key');
    }
    if (!found) {
      throw new ApiError(404, 'invalid_request_error', `Unrecognized request URL (${rec.method}: ${rec.path}). Please see https://stripe.com/docs or we can help at https://support.stripe.com/.`);
    }
    if (found.route.metered && limiter) {
      const wait = limiter.take();
      if (wait > 0) {
        rec.fault = 'rate_limited';
        throw new ApiError(429, 'invalid_request_error', 'Request rate limit exceeded. Learn more about rate limits here https://stripe.com/docs/rate-limits.', 'rate_limit', undefined, { 'Retry-After': String(Math.ceil(wait)) });
      }
    }

    const key = rec.idempotencyKey && IDEMPOTENT_METHODS.has(rec.method) ? `${apiKey}|${rec.idempotencyKey}` : undefined;
    const params = rec.method === 'POST' ? rec.body : rec.query;
    const fingerprint = JSON.stringify([rec.method, rec.path, params]);
    const saved = key ? idempotent.get(key) : undefined;
    if (saved && saved.fingerprint !== fingerprint) {
      throw new ApiError(400, 'idempotency_error', `Keys for idempotent requests can only be used with the same parameters they were first used with. Try using a key other than '${rec.idempotencyKey}' if you meant to execute a different request.`);
    }
    if (saved) return { ...saved.answer, headers: { ...saved.answer.headers, 'Idempotent-Replayed': 'true' } };

    const reader = new Reader(params);
    const expand = reader.strings('expand');
    const result = found.route.handle(reader, found.ids);
    const done: Answer = { status: 200, body: expand.length > 0 ? store.expand(result, expand) : structuredClone(result), headers: {} };
    // Like Stripe, only requests that ran are saved: refused ones (4xx) may be retried with the same key.
    if (key) {
      idempotent.set(key, { fingerprint, answer: done });
      if (idempotent.size > IDEMPOTENCY_KEYS_KEPT) idempotent.delete(idempotent.keys().next().value as string);
    }
    return done;
  }

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const chunks: Buffer[] = [];
    for await (const chunk of req) chunks.push(chunk as Buffer);
    const raw = Buffer.concat(chunks).toString('utf8');
    const url = new URL(req.url ?? '/', 'http://fake-stripe');
    const headers = Object.fromEntries(Object.entries(req.headers).map(([k, v]) => [k, Array.isArray(v) ? v.join(', ') : (v ?? '')]));
    const rec: RecordedRequest = {
      method: req.method ?? 'GET', path: url.pathname, query: {}, body: {}, headers,
      idempotencyKey: headers['idempotency-key'] || undefined, status: 0, fault: undefined, at: new Date(),
    };
    if (opts.recordRequests ?? true) requests.push(rec);
    let malformed: ApiError | undefined;
    try {
      rec.query = parseForm(url.search.slice(1));
      rec.body = raw === '' ? {} : rec.path.startsWith('/v2/') ? parseJson(raw) : parseForm(raw);
    } catch (e) {
      malformed = e as ApiError; // both parsers only throw ApiError
    }

    const fault = faults.take(rec.method, rec.path);
    rec.fault = fault?.mode ?? (fault ? 'error' : undefined);
    if (fault?.mode === 'reset') return void req.socket.destroy();
    if (fault?.mode === 'timeout') {
      if (fault.delayMs !== undefined) setTimeout(() => req.socket.destroy(), fault.delayMs).unref();
      return;
    }
    if (fault?.mode === 'delay') await new Promise((resolve) => setTimeout(resolve, fault.delayMs ?? 0));

    let out: Answer;
    try {
      if (malformed) throw malformed;
      out = fault && (fault.mode ?? 'error') === 'error' ? faultAnswer(fault) : answer(rec, apiKeyOf(headers.authorization));
    } catch (e) {
      if (!(e instanceof ApiError)) console.error('fake-stripe: handler failed', e);
      const err = e instanceof ApiError ? e : new ApiError(500, 'api_error', `Fake Stripe failed: ${(e as Error).message}`);
      out = { status: err.status, body: err.body(), headers: err.headers };
    }
    rec.status = out.status;
    if (fault?.mode === 'lost_response') return void req.socket.destroy();
    const body = JSON.stringify(out.body, null, 2);
    res.writeHead(out.status, {
      'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body), 'Request-Id': newId('req', 14),
      'Stripe-Version': headers['stripe-version'] || Stripe.API_VERSION,
      ...(rec.idempotencyKey ? { 'Idempotency-Key': rec.idempotencyKey } : {}), ...out.headers,
    });
    res.end(body);
  }

  const server = createServer((req, res) => {
    handle(req, res).catch((err: unknown) => {
      console.error('fake-stripe: request failed', err);
      res.destroy();
    });
  });
  const host = opts.host ?? '127.0.0.1';
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port ?? 0, host, () => resolve());
  });
  const port = (server.address() as AddressInfo).port;
  const clientHost = host === '0.0.0.0' || host === '::' ? '127.0.0.1' : host;

  const fake: FakeStripe = {
    url: `http://${clientHost}:${port}`, host: clientHost, port, requests, state: store.state,
    webhookSecret: opts.webhookSecret ?? 'whsec_fake_stripe_0000', webhookUrl: opts.webhookUrl,
    client: (apiKey = 'sk_test_fake_stripe', config = {}) =>
      new Stripe(apiKey, { host: clientHost, port, protocol: 'http', maxNetworkRetries: 0, ...config }),
    injectFaults: (rule) => faults.add(rule),
    clearFaults: () => faults.clear(),
    meterTotal: (meter, customer, from, to) => metering.total(meter, customer, from, to),
    finalizeInvoice: (customerId, options) => invoicing.finalize(customerId, options),
    expireMeterEventSessions: () => metering.expireSessions(),
    async emitWebhook(type, dataObject) {
      if (!fake.webhookUrl) throw new Error('fake-stripe: set webhookUrl before emitWebhook');
      const event = store.fixtures.build('event', {
        id: newId('evt', 24), object: 'event' as const, type, api_version: Stripe.API_VERSION, created: store.now(),
        data: { object: dataObject }, livemode: false, pending_webhooks: 1, request: { id: null, idempotency_key: null },
      }) as EventObj;
      store.state.events.set(event.id, event);
      const payload = JSON.stringify(event, null, 2);
      const res = await fetch(fake.webhookUrl, {
        method: 'POST', body: payload,
        headers: { 'Content-Type': 'application/json; charset=utf-8', 'Stripe-Signature': signPayload(payload, fake.webhookSecret) },
      });
      return { status: res.status, body: await res.text() };
    },
    close: () => new Promise<void>((resolve, reject) => {
      server.close((err) => (err ? reject(err) : resolve()));
      server.closeAllConnections();
    }),
  };
  return fake;
}

/** `Authorization: Bearer KEY` as the SDK sends it, or `Basic base64(KEY:)` as curl -u does. */
function apiKeyOf(header: string | undefined): string | undefined {
  if (!header) return undefined;
  const [scheme, value = ''] = header.split(' ', 2);
  if (/^bearer$/i.test(scheme)) return value || undefined;
  if (/^basic$/i.test(scheme)) return Buffer.from(value, 'base64').toString('utf8').split(':')[0] || undefined;
  return undefined;
}

function parseJson(raw: string): Params {
  let value: unknown;
  try {
    value = JSON.parse(raw);
  } catch {
    throw new ApiError(400, 'invalid_request_error', 'Invalid JSON body.', 'invalid_fields');
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new ApiError(400, 'invalid_request_error', 'The body must be a JSON object.', 'invalid_fields');
  return value as Params;
}

/** The answer an `error` fault gives, shaped like Stripe's own for that status. */
function faultAnswer(rule: FaultRule): Answer {
  const status = rule.status ?? 500;
  const headers: Record<string, string> = {};
  if (rule.shouldRetry !== undefined) headers['Stripe-Should-Retry'] = String(rule.shouldRetry);
  if (status === 429) {
    headers['Retry-After'] = String(rule.retryAfterSeconds ?? 1);
    return { status, headers, body: new ApiError(status, 'invalid_request_error', 'Request rate limit exceeded. (injected fault)', 'rate_limit').body() };
  }
  if (status === 409) return { status, headers, body: new ApiError(status, 'invalid_request_error', 'This object cannot be accessed right now because another API request or Stripe process is currently accessing it. (injected fault)', 'lock_timeout').body() };
  const type = status >= 500 ? 'api_error' : 'invalid_request_error';
  return { status, headers, body: new ApiError(status, type, `Something went wrong on Stripe's end. (injected fault ${status})`).body() };
}
