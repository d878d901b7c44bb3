import { spawn, type ChildProcess } from 'node:child_process';
import { createServer, connect, type Server, type Socket } from 'node:net';
import { Redis } from 'ioredis';
import { signUpTenant, startTestApi, type TestApi } from '../support/api';
import { testDatabaseUrl } from '../support/env';
import { freePort } from '../support/net';

/**
 * The API when a backing service fails: Redis down (a private redis-server, killed) and Postgres
 * not answering (a TCP proxy that swallows traffic, as a hung or partitioned server does). Requests
 * fail closed, at once or within the query timeout, as SERVICE_UNAVAILABLE (HTTP 503): never a
 * hang, never INTERNAL.
 */


const REDIS_BIN = process.env.REDIS_SERVER_BIN ?? '/usr/bin/redis-server';

describe('API: Redis down (a private redis-server, killed)', () => {
  let port: number;
  let redisProc: ChildProcess | null = null;
  let api: TestApi | null = null;

  async function startRedis(): Promise<ChildProcess> {
    const child = spawn(REDIS_BIN, ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--protected-mode', 'no'], {
      stdio: ['ignore', 'ignore', 'inherit'],
    });
    const deadline = Date.now() + 10_000;
    for (;;) {
      const probe = new Redis({ port, host: '127.0.0.1', lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null });
      probe.on('error', () => undefined);
      try {
        await probe.connect();
        if ((await probe.ping()) === 'PONG') return child;
      } catch {
        if (Date.now() > deadline) throw new Error('redis-server did not start');
        await new Promise((r) => setTimeout(r, 100));
      } finally {
        probe.disconnect();
      }
    }
  }

  beforeAll(async () => {
    port = await freePort();
    redisProc = await startRedis();
    api = await startTestApi({ REDIS_URL: `redis://127.0.0.1:${port}` });
  }, 30_000);
  afterAll(async () => {
    if (!redisProc || redisProc.exitCode !== null || redisProc.signalCode !== null) redisProc = await startRedis();
    await api?.close().catch(() => undefined);
    redisProc?.kill('SIGKILL');
  }, 30_000);

  it('with Redis down, a request fails closed at once as SERVICE_UNAVAILABLE (HTTP 503)', async () => {
    const t = await signUpTenant(api!, 'RedisDown');
    expect((await api!.gql('{ me { user { id } } }', {}, t.token)).data?.me.user.id).toBe(t.userId);
    const child = redisProc!;
    const exited = new Promise((r) => child.once('exit', r));
    child.kill('SIGKILL');
    await exited;
    const t0 = performance.now();
    const res = await api!.gql('{ me { user { id } } }', {}, t.token);
    const ms = performance.now() - t0;
    expect({ status: res.status, code: res.errors?.[0]?.extensions?.code, message: res.errors?.[0]?.message })
      .toEqual({ status: 503, code: 'SERVICE_UNAVAILABLE', message: 'The service is temporarily unavailable; retry shortly' });
    expect(ms).toBeLessThan(10_000); // not a hang
  }, 30_000);
});

/** A TCP proxy to Postgres that can be made to swallow traffic (a hung or partitioned database). */
function blackholeProxy(target: { host: string; port: number }): Promise<{ port: number; blackhole(): void; destroyAll(): void; close(): void; server: Server }> {
  let holed = false;
  const sockets = new Set<Socket>();
  const server = createServer((client) => {
    sockets.add(client);
    client.on('error', () => undefined);
    client.on('close', () => sockets.delete(client));
    if (holed) return void client.resume();
    const upstream = connect(target.port, target.host);
    sockets.add(upstream);
    upstream.on('error', () => client.destroy());
    upstream.on('close', () => sockets.delete(upstream));
    client.on('data', (d) => { if (!holed) upstream.write(d); });
    upstream.on('data', (d) => { if (!holed) client.write(d); });
    client.on('close', () => upstream.destroy());
  });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve({
    port: (server.address() as { port: number }).port,
    blackhole: () => { holed = true; },
    destroyAll: () => { for (const s of sockets) s.destroy(); },
    close: () => server.close(),
    server,
  })));
}

describe('API: Postgres unresponsive (hung / partitioned)', () => {
  it('with Postgres not answering, a request ends within the query timeout as SERVICE_UNAVAILABLE, not a hang', async () => {
    const dbUrl = new URL(await testDatabaseUrl());
    const proxy = await blackholeProxy({ host: dbUrl.hostname, port: Number(dbUrl.port || 5432) });
    dbUrl.hostname = '127.0.0.1';
    dbUrl.port = String(proxy.port);
    const api = await startTestApi({ DATABASE_URL: dbUrl.toString(), DB_QUERY_TIMEOUT_MS: '1500', DB_CONNECT_TIMEOUT_MS: '1500' });
    try {
      const t = await signUpTenant(api, 'PgDown');
      expect((await api.gql('{ me { user { id } } }', {}, t.token)).data?.me.user.id).toBe(t.userId);
      proxy.blackhole();
      const res = await fetch(api.server.url, {
        method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${t.token}` },
        body: JSON.stringify({ query: '{ apiKeys(first: 5) { edges { node { id } } } }' }), signal: AbortSignal.timeout(15_000),
      }).then(async (r) => ({ status: r.status, body: await r.json() }), (e: Error) => ({ status: 0, body: { hung: e.name } }));
      expect({ status: res.status, code: (res.body as { errors?: Array<{ extensions?: { code?: string } }> }).errors?.[0]?.extensions?.code })
        .toEqual({ status: 503, code: 'SERVICE_UNAVAILABLE' });
    } finally {
      proxy.destroyAll();
      proxy.close();
      await api.close().catch(() => undefined);
    }
  }, 60_000);
});
