/** SDK and CLI pieces that need no server: errors, retries, webhooks, pagination, CLI parsing and formatting. */
import { createHmac, randomBytes } from 'node:crypto';
import {
  BadUserInputError, ForbiddenError, InternalError, NetworkError, NimbusError, NotFoundError, Nimbus, PageIterator,
  QuotaExceededError, RateLimitedError, ServiceUnavailableError, SpendLimitReachedError, UnauthenticatedError,
  WebhookVerificationError, errorFromGraphQL, verifyWebhook,
} from '../../sdk/src';
import { retryDelayMs } from '../../sdk/src/transport';
import { parse, UsageError } from '../../sdk/src/cli/args';
import { bar, barChart, money, progressBar, table } from '../../sdk/src/cli/format';
import { exitCodeFor, leaderboard } from '../../sdk/src/cli/main';
import { inferDatasetFormat } from '../../sdk/src/upload';
import { waitForJob } from '../../sdk/src/wait';
import { SubscriptionConnection } from '../../sdk/src/websocket';
import type { TypedDocument } from '../../sdk/src/transport';

/** Signs like the Standard Webhooks reference (independently of both the server and the SDK). */
function sign(secret: string, id: string, ts: number, body: string): string {
  const key = Buffer.from(secret.slice('whsec_'.length), 'base64');
  return `v1,${createHmac('sha256', key).update(`${id}.${ts}.${body}`).digest('base64')}`;
}

describe('verifyWebhook', () => {
  const secret = `whsec_${randomBytes(24).toString('base64')}`;
  const body = JSON.stringify({ type: 'prediction.succeeded', timestamp: new Date().toISOString(), data: { id: 'p1', status: 'SUCCEEDED', output: { message: 'hi' } } });
  const now = Math.floor(Date.now() / 1000);
  const headers = (over: Record<string, string> = {}) => ({
    'webhook-id': 'msg_1', 'webhook-timestamp': String(now), 'webhook-signature': sign(secret, 'msg_1', now, body), ...over,
  });

  it('returns the parsed event for a valid signature (string or bytes body, record or Headers)', () => {
    expect(verifyWebhook(headers(), body, secret)).toMatchObject({ type: 'prediction.succeeded', data: { id: 'p1' } });
    expect(verifyWebhook(new Headers(headers()), Buffer.from(body), secret).data.output).toEqual({ message: 'hi' });
    const upper = Object.fromEntries(Object.entries(headers()).map(([k, v]) => [k.toUpperCase(), v]));
    expect(verifyWebhook(upper, body, secret).type).toBe('prediction.succeeded');
  });

  it('accepts any of several space-separated signatures (secret rotation)', () => {
    const h = headers({ 'webhook-signature': `v1,${Buffer.alloc(32).toString('base64')} ${sign(secret, 'msg_1', now, body)}` });
    expect(verifyWebhook(h, body, secret).data.id).toBe('p1');
  });

  it('rejects a tampered body, another secret, another id, a missing header and a bad version', () => {
    const other = `whsec_${randomBytes(24).toString('base64')}`;
    expect(() => verifyWebhook(headers(), body.replace('hi', 'ho'), secret)).toThrow(WebhookVerificationError);
    expect(() => verifyWebhook(headers(), body, other)).toThrow(/No matching webhook signature/);
    expect(() => verifyWebhook(headers({ 'webhook-id': 'msg_2' }), body, secret)).toThrow(WebhookVerificationError);
    const { 'webhook-signature': _s, ...unsigned } = headers();
    expect(() => verifyWebhook(unsigned, body, secret)).toThrow(/Missing/);
    const v2 = headers({ 'webhook-signature': sign(secret, 'msg_1', now, body).replace('v1,', 'v2,') });
    expect(() => verifyWebhook(v2, body, secret)).toThrow(WebhookVerificationError);
  });

  it('enforces the timestamp tolerance both ways', () => {
    const old = now - 301;
    const h = headers({ 'webhook-timestamp': String(old), 'webhook-signature': sign(secret, 'msg_1', old, body) });
    expect(() => verifyWebhook(h, body, secret)).toThrow(/too old/);
    expect(verifyWebhook(h, body, secret, { toleranceSeconds: 600 }).data.id).toBe('p1');
    const future = now + 400;
    const f = headers({ 'webhook-timestamp': String(future), 'webhook-signature': sign(secret, 'msg_1', future, body) });
    expect(() => verifyWebhook(f, body, secret)).toThrow(/future/);
    expect(() => verifyWebhook(headers({ 'webhook-timestamp': 'soon' }), body, secret)).toThrow(/Invalid webhook-timestamp/);
  });
});

describe('errors', () => {
  it('maps every contract code to its class, with field, retryAfterSeconds and requestId', () => {
    const cases: Array<[string, new (...a: any[]) => NimbusError]> = [
      ['UNAUTHENTICATED', UnauthenticatedError], ['FORBIDDEN', ForbiddenError], ['BAD_USER_INPUT', BadUserInputError],
      ['NOT_FOUND', NotFoundError], ['RATE_LIMITED', RateLimitedError], ['QUOTA_EXCEEDED', QuotaExceededError],
      ['SPEND_LIMIT_REACHED', SpendLimitReachedError], ['SERVICE_UNAVAILABLE', ServiceUnavailableError], ['INTERNAL', InternalError],
    ];
    for (const [code, Class] of cases) {
      const e = errorFromGraphQL([{ message: 'm', extensions: { code } }], { requestId: 'r1', status: 400 });
      expect(e).toBeInstanceOf(Class);
      expect(e).toBeInstanceOf(NimbusError);
      expect({ code: e.code, name: e.name, requestId: e.requestId }).toEqual({ code, name: Class.name, requestId: 'r1' });
    }
    const bad = errorFromGraphQL([{ message: 'input.x: nope', extensions: { code: 'BAD_USER_INPUT', field: 'input.x' } }]);
    expect(bad.field).toBe('input.x');
    const limited = errorFromGraphQL([{ message: 'slow down', extensions: { code: 'RATE_LIMITED', retryAfterSeconds: 3 } }]) as RateLimitedError;
    expect(limited.retryAfterSeconds).toBe(3);
    const unknown = errorFromGraphQL([{ message: 'Cannot query field', extensions: { code: 'GRAPHQL_VALIDATION_FAILED' } }]);
    expect(unknown.constructor).toBe(NimbusError);
    expect(unknown.code).toBe('GRAPHQL_VALIDATION_FAILED');
  });

  it('retry delays grow exponentially with jitter and never undercut retryAfterSeconds', () => {
    const net = new NetworkError('x');
    expect(retryDelayMs(net, 0, () => 0)).toBe(250);
    expect(retryDelayMs(net, 0, () => 1)).toBe(500);
    expect(retryDelayMs(net, 3, () => 1)).toBe(4000);
    expect(retryDelayMs(net, 10, () => 1)).toBe(8000);
    const limited = new RateLimitedError('x', { code: 'RATE_LIMITED', retryAfterSeconds: 2 });
    expect(retryDelayMs(limited, 0, () => 0)).toBe(2000);
    const maintenance = new ServiceUnavailableError('x', { code: 'SERVICE_UNAVAILABLE', retryAfterSeconds: 3 });
    expect(retryDelayMs(maintenance, 0, () => 0)).toBe(3000);
  });

  it('waits the Retry-After a 503 asks for before retrying (a proxy in maintenance)', async () => {
    const { fetch, calls } = scriptedFetch([
      new Response('maintenance', { status: 503, headers: { 'retry-after': '1' } }),
      json({ data: { services: [] } }),
    ]);
    const nimbus = new Nimbus({ apiKey: 'k', baseUrl: 'http://api.test', fetch, maxRetries: 2 });
    const t0 = Date.now();
    await expect(nimbus.services.list()).resolves.toEqual([]);
    expect(calls).toHaveLength(2);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(1000);
  });
});

/** A fetch that answers from a script and records the requests. */
function scriptedFetch(responses: Array<Response | Error>) {
  const calls: Array<{ body: any; headers: Record<string, string> }> = [];
  const fetch = async (_url: string | URL, init?: RequestInit) => {
    calls.push({ body: JSON.parse(String(init?.body)), headers: init?.headers as Record<string, string> });
    const next = responses.shift();
    if (!next) throw new Error('no more scripted responses');
    if (next instanceof Error) throw next;
    return next;
  };
  return { fetch, calls };
}
const json = (body: unknown, status = 200, headers: Record<string, string> = {}) =>
  new Response(JSON.stringify(body), { status, headers: { 'content-type': 'application/json', ...headers } });

describe('transport', () => {
  it('retries queries on SERVICE_UNAVAILABLE, network errors and RATE_LIMITED (after retryAfterSeconds)', async () => {
    const { fetch, calls } = scriptedFetch([
      new Response('<html>bad gateway</html>', { status: 502 }),
      new TypeError('fetch failed'),
      json({ errors: [{ message: 'slow', extensions: { code: 'RATE_LIMITED', retryAfterSeconds: 0.2 } }] }, 429),
      json({ data: { services: [] } }),
    ]);
    const nimbus = new Nimbus({ apiKey: 'k', baseUrl: 'http://api.test', fetch, maxRetries: 3 });
    const t0 = Date.now();
    await expect(nimbus.services.list()).resolves.toEqual([]);
    expect(calls).toHaveLength(4);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(200);
    expect(calls[0]!.headers.authorization).toBe('Bearer k');
    expect(calls[0]!.body.operationName).toBe('Services');
    expect(new Set(calls.map((c) => c.headers['x-request-id'])).size).toBe(1);
  });

  it('does not retry a mutation without an idempotency key, and gives up after maxRetries', async () => {
    const a = scriptedFetch([new Response('down', { status: 503 }), json({ data: {} })]);
    const nimbus = new Nimbus({ apiKey: 'k', baseUrl: 'http://api.test', fetch: a.fetch });
    await expect(nimbus.apiKeys.create({ name: 'x', scopes: ['READ'] })).rejects.toBeInstanceOf(ServiceUnavailableError);
    expect(a.calls).toHaveLength(1);
    const b = scriptedFetch([new TypeError('fetch failed'), new TypeError('fetch failed')]);
    const once = new Nimbus({ apiKey: 'k', baseUrl: 'http://api.test', fetch: b.fetch, maxRetries: 1 });
    const err = await once.me().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(NetworkError);
    expect(b.calls).toHaveLength(2);
  });

  it('retries predict with the same generated idempotency key', async () => {
    const p = { __typename: 'Prediction', id: 'p1', status: 'SUCCEEDED', output: { message: 1 } };
    const { fetch, calls } = scriptedFetch([new TypeError('socket hang up'), json({ data: { predict: p } })]);
    const nimbus = new Nimbus({ apiKey: 'k', baseUrl: 'http://api.test/graphql', fetch });
    await expect(nimbus.predict({ service: 'system.echo', input: { message: 1 }, wait: 5 })).resolves.toMatchObject({ id: 'p1' });
    const keys = calls.map((c) => c.body.variables.input.idempotencyKey);
    expect(keys[0]).toMatch(/^[0-9a-f-]{36}$/);
    expect(keys[1]).toBe(keys[0]);
    expect(calls[0]!.body.variables.input.wait).toBe(5);
  });

  it('reads defaults from NIMBUS_API_KEY and NIMBUS_BASE_URL', async () => {
    const saved = { key: process.env.NIMBUS_API_KEY, url: process.env.NIMBUS_BASE_URL };
    process.env.NIMBUS_API_KEY = 'from-env';
    process.env.NIMBUS_BASE_URL = 'http://env.test/';
    try {
      const nimbus = new Nimbus({ fetch: async () => json({ data: {} }) });
      expect(nimbus.graphqlUrl).toBe('http://env.test/graphql');
      expect(nimbus.authenticated).toBe(true);
      delete process.env.NIMBUS_BASE_URL;
      expect(new Nimbus().graphqlUrl).toBe('http://localhost:4000/graphql');
    } finally {
      if (saved.key === undefined) delete process.env.NIMBUS_API_KEY; else process.env.NIMBUS_API_KEY = saved.key;
      if (saved.url === undefined) delete process.env.NIMBUS_BASE_URL; else process.env.NIMBUS_BASE_URL = saved.url;
    }
  });
});

describe('PageIterator', () => {
  const fetchPage = async (first: number, after: string | null) => {
    const start = after ? Number(after) : 0;
    const items = Array.from({ length: Math.max(0, Math.min(first, 7 - start)) }, (_, i) => start + i);
    return { items, hasNextPage: start + items.length < 7, endCursor: String(start + items.length) };
  };
  it('walks items across pages, by page, and up to a limit', async () => {
    expect(await new PageIterator(fetchPage, { pageSize: 3 }).toArray()).toEqual([0, 1, 2, 3, 4, 5, 6]);
    const pages: number[][] = [];
    for await (const p of new PageIterator(fetchPage, { pageSize: 3 }).pages()) pages.push(p.items);
    expect(pages).toEqual([[0, 1, 2], [3, 4, 5], [6]]);
    expect(await new PageIterator(fetchPage, { pageSize: 3, limit: 4 }).toArray()).toEqual([0, 1, 2, 3]);
  });
});

describe('CLI helpers', () => {
  it('parses flags, optional values and positionals; refuses unknown options', () => {
    const spec = { json: { type: 'boolean' as const }, month: { type: 'optional' as const }, input: { type: 'string' as const } };
    expect(parse(['get', 'x', '--json', '--input={"a":1}'], spec)).toEqual({ flags: { json: true, input: '{"a":1}' }, positionals: ['get', 'x'] });
    expect(parse(['--month'], spec).flags.month).toBe(true);
    expect(parse(['--month', '2026-01', '--json'], spec).flags).toEqual({ month: '2026-01', json: true });
    expect(() => parse(['--nope'], spec)).toThrow(UsageError);
    expect(() => parse(['--input'], spec)).toThrow(/needs a value/);
  });

  it('maps errors to the documented exit codes', () => {
    expect(exitCodeFor(new UsageError('x'))).toBe(2);
    expect(exitCodeFor(new BadUserInputError('x', { code: 'BAD_USER_INPUT' }))).toBe(2);
    expect(exitCodeFor(new UnauthenticatedError('x', { code: 'UNAUTHENTICATED' }))).toBe(3);
    expect(exitCodeFor(new NotFoundError('x', { code: 'NOT_FOUND' }))).toBe(4);
    expect(exitCodeFor(new SpendLimitReachedError('x', { code: 'SPEND_LIMIT_REACHED' }))).toBe(6);
    expect(exitCodeFor(new NetworkError('x'))).toBe(7);
    expect(exitCodeFor(new NimbusError('x', { code: 'GRAPHQL_VALIDATION_FAILED' }))).toBe(1);
  });

  it('formats tables, money, progress and bar charts', () => {
    expect(table([{ a: 'x', n: '1' }, { a: 'longer', n: '10' }], [{ header: 'A', value: (r) => r.a }, { header: 'N', value: (r) => r.n, align: 'right' }]))
      .toBe('A        N\nx        1\nlonger  10\n');
    expect(money({ amountCents: 1234, currency: 'usd' })).toBe('$12.34');
    expect(money({ amountCents: 5, currency: 'chf' })).toBe('0.05 CHF');
    expect(progressBar(0.5, 10)).toBe('[█████░░░░░]  50%');
    expect(bar(1, 2, 4)).toBe('██');
    expect(bar(1, 3, 1)).toBe('▍');
    expect(barChart([{ label: 'a', value: 2, text: '2 min' }, { label: 'bb', value: 1, text: '1 min' }], 4))
      .toBe('a   ████  2 min\nbb  ██    1 min\n');
  });

  it('ranks trials for the leaderboard by the main metric', () => {
    const trial = (id: string, metrics: Record<string, number> | null) => ({ algorithm: `algo-${id}`, status: 'SUCCEEDED' as const, metrics });
    const board = leaderboard({ trials: [trial('a', { accuracy: 0.8 }), trial('b', { accuracy: 0.9 }), trial('c', null)] });
    expect(board[0]).toMatch(/ACCURACY/);
    expect(board[1]).toMatch(/1\s+algo-b/);
    expect(board).toHaveLength(3);
    const reg = leaderboard({ trials: [trial('a', { rmse: 3 }), trial('b', { rmse: 2 })] });
    expect(reg[1]).toMatch(/algo-b/);
  });

  it('infers a dataset format from the file name or the content', () => {
    const bytes = (s: string) => new TextEncoder().encode(s);
    expect(inferDatasetFormat('x.csv', bytes('{'))).toBe('CSV');
    expect(inferDatasetFormat('x.ndjson', bytes('a,b'))).toBe('JSONL');
    expect(inferDatasetFormat(undefined, bytes('\n {"a":1}'))).toBe('JSONL');
    expect(inferDatasetFormat(undefined, bytes('a,b\n1,2'))).toBe('CSV');
  });
});

describe('waitForJob over a subscription', () => {
  /** A connection whose every subscription is answered with `errors` at once. */
  const refusing = (errors: unknown) => ({
    get: async () => ({ subscribe: (_p: unknown, sink: { error(e: unknown): void }) => { setTimeout(() => sink.error(errors), 0); return () => undefined; } }),
  }) as unknown as SubscriptionConnection;
  const adapter = (statuses: string[]) => {
    let i = 0;
    return {
      name: 'prediction', cancel: async () => undefined,
      get: async (id: string) => ({ id, status: statuses[Math.min(i++, statuses.length - 1)] }),
      subscription: { document: 'subscription { x }' as unknown as TypedDocument<unknown, { id: string }>, pick: (d: unknown) => d as { id: string; status: string } },
    };
  };

  it('falls back to polling when the server refuses the subscription with RATE_LIMITED (too many open)', async () => {
    const limited = [{ message: 'At most 5 subscriptions may be open at once', extensions: { code: 'RATE_LIMITED' } }];
    const job = await waitForJob(adapter(['QUEUED', 'RUNNING', 'SUCCEEDED']), refusing(limited), 'p1', { pollIntervalMs: 5 });
    expect(job).toEqual({ id: 'p1', status: 'SUCCEEDED' });
  });

  it('polling waits out reads that fail for a while (network, 503, rate limit) and still rejects on other errors', async () => {
    const flaky = (failures: Error[], then: string[]) => {
      let i = 0;
      return {
        name: 'prediction', cancel: async () => undefined,
        get: async (id: string) => {
          const f = failures.shift();
          if (f) throw f;
          return { id, status: then[Math.min(i++, then.length - 1)] };
        },
        subscription: { document: 'subscription { x }' as unknown as TypedDocument<unknown, { id: string }>, pick: (d: unknown) => d as { id: string; status: string } },
      };
    };
    const noSocket = undefined as unknown as SubscriptionConnection; // polling only
    const blips = [new NetworkError('fetch failed'), new ServiceUnavailableError('HTTP 503', { code: 'SERVICE_UNAVAILABLE' }), new NetworkError('reset')];
    const job = await waitForJob(flaky(blips, ['RUNNING', 'SUCCEEDED']), noSocket, 'p1', { transport: 'polling', pollIntervalMs: 5 });
    expect(job).toEqual({ id: 'p1', status: 'SUCCEEDED' });
    const gone = flaky([new NotFoundError('Prediction not found', { code: 'NOT_FOUND' })], ['RUNNING']);
    await expect(waitForJob(gone, noSocket, 'p1', { transport: 'polling', pollIntervalMs: 5 })).rejects.toBeInstanceOf(NotFoundError);
  });

  it('falls back to polling when the WebSocket goes half-open (no pong): the wait does not hang', async () => {
    const { WebSocketServer, WebSocket } = await import('ws');
    // Acknowledges the connection, then answers nothing: no pong, no data, no error, as a socket a
    // NAT dropped silently.
    const wss = new WebSocketServer({ port: 0, host: '127.0.0.1', handleProtocols: (p: Set<string>) => [...p][0] ?? false });
    wss.on('connection', (sock) => sock.on('message', (m) => {
      if (JSON.parse(String(m)).type === 'connection_init') sock.send(JSON.stringify({ type: 'connection_ack' }));
    }));
    await new Promise((r) => wss.once('listening', r));
    const port = (wss.address() as { port: number }).port;
    const ws = new SubscriptionConnection({ url: `ws://127.0.0.1:${port}/graphql`, token: 't', webSocketImpl: WebSocket, keepAliveMs: 100, pongTimeoutMs: 200 });
    try {
      const job = await waitForJob(adapter(['RUNNING', 'SUCCEEDED']), ws, 'p1', { pollIntervalMs: 5, timeoutMs: 10_000 });
      expect(job).toEqual({ id: 'p1', status: 'SUCCEEDED' });
    } finally {
      await ws.close();
      for (const c of wss.clients) c.terminate();
      await new Promise((r) => wss.close(r));
    }
  });

  it('rejects with the typed error for other contract codes (NOT_FOUND)', async () => {
    const missing = [{ message: 'Prediction not found', extensions: { code: 'NOT_FOUND' } }];
    await expect(waitForJob(adapter(['SUCCEEDED']), refusing(missing), 'p1', { pollIntervalMs: 5 })).rejects.toBeInstanceOf(NotFoundError);
  });
});
