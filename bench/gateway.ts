import { machineBusyMs, pidsNamed, processCpuMs } from './proc';
import 'reflect-metadata';
import { createSecretKey, randomBytes, type KeyObject } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { availableParallelism } from 'node:os';
import { performance } from 'node:perf_hooks';
import jwt from 'jsonwebtoken';
import { Client, Pool } from 'pg';
import { createApp, type App } from '../src/app';
import { appDatabaseUrl, jwtKeys, loadEnv, type Env } from '../src/config/env';
import { prepareDatabase } from '../src/platform/db/prepare';
import { startServer, type RunningServer } from '../src/server';
import { PLAN_LIMITS } from '../src/modules/tenancy/plans';
import { percentile, round, type Bench, numFlag } from './harness';
import { runLoad, type Expect, type LoadResult } from './load';
import { signUpBenchTenant } from './tenant';

/**
 * `npm run bench -- gateway [--concurrency 16] [--seconds 5] [--warmup 1] [--rounds 1] [--pool 10] [--real-limits]`
 *
 * The authenticated `Me` query through the full stack (createApp + startServer: Express, Apollo,
 * auth, rate limit, cost plugin, metrics, TypeORM) with a user JWT and with an API key, against a
 * bare `node:http` handler that does the same work on a pg Pool of the same size, as the same
 * non-owner role: verify the JWT with jsonwebtoken (secret held as a KeyObject, the cheap way),
 * then BEGIN; set_config('app.tenant_id'); SELECT tenant; SELECT user; COMMIT — the
 * statements the full stack's `me()` issues — and answer the same JSON.
 *
 * Same load for every target: `concurrency` keep-alive connections, each with one request in
 * flight (closed loop), `warmup` s unrecorded then `seconds` s recorded; `rounds` > 1 repeats the
 * three targets interleaved and merges them. The generator runs in a worker_thread (bench/load.ts
 * says why), so it never shares the server's event loop. Every response is checked (status 200,
 * no `errors`, the right tenant/user/role); failures are counted by kind and excluded from req/s
 * and latencies.
 *
 * The tenant is on the ENTERPRISE plan, and for this process only the ENTERPRISE limits are raised
 * to 10^6 rps (restored afterwards): the real ones (2000 rps per tenant, 1000 per key) are below
 * what the API-key row reaches on an idle 2-core machine, and a refused request skips the database,
 * which would flatter the row. The limiter still runs its Redis script on every request, so its
 * cost is measured. `--real-limits` keeps the plan's limits; RATE_LIMITED answers are counted in
 * the `rate-limited` column either way, and the summary says which rows exceed the real limits.
 * Database: BENCH_DATABASE_URL or postgres://postgres@127.0.0.1:5432/nimbus_bench (created and
 * migrated if missing); Redis keys under a random prefix, deleted afterwards.
 */

const ME = 'query Me { me { user { id email } tenant { id name slug status } role } }';
const APP_NAME_FULL = 'nimbus-api'; // what createApp names its pool's connections
const APP_NAME_BARE = 'nimbus-bench-bare';
const BENCH_DATABASE_URL = process.env.BENCH_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/nimbus_bench';


// ---- the bare baseline -----------------------------------------------------------------------

class HttpError extends Error {
  constructor(readonly status: number, message: string) {
    super(message);
  }
}

function readBody(req: IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => resolve(Buffer.concat(chunks).toString()));
    req.on('error', reject);
  });
}

function sendJson(res: ServerResponse, status: number, value: unknown): void {
  const body = JSON.stringify(value);
  res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(body) });
  res.end(body);
}

/** The least a correct handler must do for `Me`: parse, verify the JWT, one RLS transaction, answer. */
function startBare(env: Env, pool: Pool): Promise<Server> {
  // Secrets as KeyObjects: given a string, jsonwebtoken first tries createPublicKey() on it and
  // catches the failure, which costs ~0.3-0.5 ms per verify (see jwtVerifyMicroseconds in the summary).
  const keys = new Map([...jwtKeys(env)].map(([kid, secret]) => [kid, createSecretKey(Buffer.from(secret))]));
  const verify = (token: string) => {
    const kid = jwt.decode(token, { complete: true })?.header.kid;
    const secret = kid ? keys.get(kid) : undefined;
    if (!secret) throw new HttpError(401, 'unknown key id');
    try {
      const p = jwt.verify(token, secret, { algorithms: ['HS256'], issuer: 'nimbus' }) as jwt.JwtPayload;
      if (typeof p.sub !== 'string' || typeof p.tid !== 'string' || typeof p.role !== 'string') throw new Error('claims');
      return { userId: p.sub, tenantId: p.tid, role: p.role };
    } catch {
      throw new HttpError(401, 'invalid token');
    }
  };

  const handle = async (req: IncomingMessage, res: ServerResponse) => {
    if (req.method !== 'POST' || req.url !== '/graphql') throw new HttpError(404, 'not found');
    const body = JSON.parse(await readBody(req)) as { query?: unknown };
    if (typeof body.query !== 'string') throw new HttpError(400, 'query must be a string');
    const m = /^Bearer\s+(\S+)$/i.exec(req.headers.authorization ?? '');
    if (!m) throw new HttpError(401, 'missing bearer token');
    const claims = verify(m[1]);
    const client = await pool.connect();
    let tenant: Record<string, unknown> | undefined;
    let user: Record<string, unknown> | undefined;
    try {
      await client.query('BEGIN');
      await client.query(`SELECT set_config('app.tenant_id', $1, true)`, [claims.tenantId]);
      tenant = (await client.query('SELECT id, name, slug, status FROM tenants WHERE id = $1', [claims.tenantId])).rows[0];
      user = (await client.query('SELECT id, email FROM users WHERE id = $1', [claims.userId])).rows[0];
      await client.query('COMMIT');
    } catch (err) {
      await client.query('ROLLBACK').catch(() => {});
      throw err;
    } finally {
      client.release();
    }
    if (!tenant) throw new HttpError(404, 'tenant not found');
    sendJson(res, 200, { data: { me: { user: user ? { id: user.id, email: user.email } : null, tenant, role: claims.role } } });
  };

  const server = createServer((req, res) => {
    handle(req, res).catch((err: Error) => {
      const status = err instanceof HttpError ? err.status : 500;
      sendJson(res, status, { errors: [{ message: err.message }] });
    });
  });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(server)));
}

// ---- CPU accounting from /proc (Linux), which stays meaningful on a small, shared machine ----------
// Latency and req/s move with whatever else runs on the box (2 cores, shared with other work); CPU
// time per request does not, so each row also reports the server thread's and its Postgres
// backends' CPU per request, and how many cores everything else used meanwhile.





interface CpuSnapshot {
  at: number;
  main: number | null; // the server's thread (the load generator runs on another)
  proc: number | null; // this whole process: server + load generator
  pg: Map<number, number>; // our Postgres backends by pid
  redis: number | null;
  machine: number | null;
}

async function cpuSnapshot(owner: Client, redisPids: number[]): Promise<CpuSnapshot> {
  const { rows } = await owner.query<{ pid: number }>(
    `SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND application_name = ANY($1)`,
    [[APP_NAME_FULL, APP_NAME_BARE]],
  );
  const pg = new Map<number, number>();
  for (const { pid } of rows) {
    const ms = processCpuMs(`/proc/${pid}/stat`);
    if (ms !== null) pg.set(pid, ms);
  }
  const redis = redisPids.length ? redisPids.reduce((a, pid) => a + (processCpuMs(`/proc/${pid}/stat`) ?? 0), 0) : null;
  return {
    at: performance.now(), main: processCpuMs(`/proc/self/task/${process.pid}/stat`), proc: processCpuMs('/proc/self/stat'),
    pg, redis, machine: machineBusyMs(),
  };
}

/** CPU milliseconds between two snapshots, by group. Backends opened in between count from zero. */
function cpuDelta(a: CpuSnapshot, b: CpuSnapshot) {
  const d = (x: number | null, y: number | null) => (x === null || y === null ? NaN : y - x);
  let pg = 0;
  for (const [pid, ms] of b.pg) pg += ms - (a.pg.get(pid) ?? 0);
  const proc = d(a.proc, b.proc);
  const redis = d(a.redis, b.redis);
  const machine = d(a.machine, b.machine);
  return { wallMs: b.at - a.at, main: d(a.main, b.main), proc, pg, redis, other: machine - proc - pg - (Number.isNaN(redis) ? 0 : redis) };
}

// ---- one measured target -----------------------------------------------------------------------

interface Target {
  name: string;
  origin: string;
  token: string;
  expect: Expect;
}

interface RunOpts {
  concurrency: number;
  seconds: number;
  warmup: number;
}

interface Measured {
  target: Target;
  load: LoadResult;
  samples: number[];
  completedTotal: number;
  wallMs: number;
  serverElu: number;
  cpuMs: ReturnType<typeof cpuDelta>;
}

async function measureOnce(t: Target, opts: RunOpts, owner: Client, redisPids: number[]): Promise<Measured> {
  const elu0 = performance.eventLoopUtilization();
  const cpu0 = await cpuSnapshot(owner, redisPids);
  const load = await runLoad({
    origin: t.origin,
    requests: [{
      method: 'POST', path: '/graphql', body: JSON.stringify({ query: ME, operationName: 'Me' }),
      headers: { 'content-type': 'application/json', authorization: `Bearer ${t.token}` },
    }],
    concurrency: opts.concurrency,
    durationMs: opts.seconds * 1000,
    warmupMs: opts.warmup * 1000,
    expect: t.expect,
    keepSamples: true,
  });
  const serverElu = performance.eventLoopUtilization(elu0).utilization;
  const cpu1 = await cpuSnapshot(owner, redisPids);
  const cpuMs = cpuDelta(cpu0, cpu1);
  return { target: t, load, samples: load.samples ?? [], completedTotal: load.completedTotal, wallMs: cpuMs.wallMs, serverElu, cpuMs };
}

/** Several rounds of one target (interleaved with the others by the caller) as one result. */
function merge(runs: Measured[], opts: RunOpts) {
  const samples = runs.flatMap((r) => r.samples).sort((a, b) => a - b);
  const sum = (f: (r: Measured) => number) => runs.reduce((a, r) => a + f(r), 0);
  const ok = sum((r) => r.load.ok);
  const errorKinds: Record<string, number> = {};
  for (const r of runs) for (const [k, v] of Object.entries(r.load.errorKinds)) errorKinds[k] = (errorKinds[k] ?? 0) + v;
  const completed = sum((r) => r.completedTotal);
  const wallMs = sum((r) => r.wallMs);
  const perReq = (f: (r: Measured) => number) => round(sum(f) / completed, 3);
  const cores = (f: (r: Measured) => number) => round(sum(f) / wallMs, 2);
  return {
    target: runs[0].target,
    rps: round(ok / (opts.seconds * runs.length), 1),
    ok,
    errors: sum((r) => r.load.errors),
    errorKinds,
    errorSamples: runs.flatMap((r) => r.load.errorSamples).slice(0, 5),
    latencyMs: {
      p50: round(percentile(samples, 50)), p90: round(percentile(samples, 90)), p99: round(percentile(samples, 99)),
      max: round(samples[samples.length - 1] ?? NaN), mean: round(samples.reduce((a, b) => a + b, 0) / (samples.length || 1)),
    },
    connections: runs.map((r) => r.load.connections),
    serverElu: round(sum((r) => r.serverElu * r.wallMs) / wallMs, 2),
    loadgenElu: round(sum((r) => r.load.loadgenElu) / runs.length, 2),
    serverCpuMsPerReq: perReq((r) => r.cpuMs.main),
    pgCpuMsPerReq: perReq((r) => r.cpuMs.pg),
    redisCpuMsPerReq: perReq((r) => r.cpuMs.redis),
    coresUsed: {
      serverThread: cores((r) => r.cpuMs.main),
      loadGenerator: cores((r) => r.cpuMs.proc - r.cpuMs.main),
      ourPostgresBackends: cores((r) => r.cpuMs.pg),
      redis: cores((r) => r.cpuMs.redis),
      everythingElse: Math.max(0, cores((r) => r.cpuMs.other)), // tick granularity can make it slightly negative
    },
  };
}

/** jsonwebtoken's verify cost with the secret as a string (what TokenSigner passes) and as a KeyObject. */
function jwtVerifyMicros(secret: string, token: string): { stringSecret: number; keyObjectSecret: number } {
  const opts: jwt.VerifyOptions = { algorithms: ['HS256'], issuer: 'nimbus' };
  const time = (key: string | KeyObject, n: number) => {
    const t0 = performance.now();
    for (let i = 0; i < n; i++) jwt.verify(token, key, opts);
    return round(((performance.now() - t0) / n) * 1000, 1);
  };
  const keyObject = createSecretKey(Buffer.from(secret));
  time(secret, 50);
  time(keyObject, 200);
  return { stringSecret: time(secret, 400), keyObjectSecret: time(keyObject, 4000) };
}

/** One request by hand before the load: the full stack and the baseline must answer the same `me`. */
async function probe(origin: string, token: string): Promise<{ status: number; json: { data?: { me?: unknown }; errors?: unknown } }> {
  const res = await fetch(`${origin}/graphql`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
    body: JSON.stringify({ query: ME, operationName: 'Me' }),
  });
  return { status: res.status, json: (await res.json()) as { data?: { me?: unknown } } };
}

// ---- the benchmark -------------------------------------------------------------------------------

const gateway: Bench = async (args) => {
  const opts: RunOpts = {
    concurrency: Math.round(numFlag(args, 'concurrency', 16)),
    seconds: numFlag(args, 'seconds', 5),
    warmup: numFlag(args, 'warmup', 1),
  };
  const rounds = Math.round(numFlag(args, 'rounds', 1));
  const realLimits = args.includes('--real-limits');
  const redisPrefix = `nimbus-bench-${randomBytes(4).toString('hex')}`;
  const env = loadEnv({
    NODE_ENV: 'test',
    DATABASE_URL: BENCH_DATABASE_URL,
    REDIS_URL: process.env.REDIS_URL ?? 'redis://127.0.0.1:6379',
    REDIS_PREFIX: redisPrefix,
    LOG_LEVEL: 'silent',
    SEED_DEMO: 'false',
    DB_POOL_SIZE: String(Math.round(numFlag(args, 'pool', 10))),
  });

  await prepareDatabase(env);
  const enterprise = { ...PLAN_LIMITS.ENTERPRISE };
  if (!realLimits) Object.assign(PLAN_LIMITS.ENTERPRISE, { tenantRps: 1e6, tenantBurst: 2e6, keyRps: 1e6, keyBurst: 2e6 });
  const owner = new Client({ connectionString: env.DATABASE_URL, application_name: 'nimbus-bench-owner' });
  await owner.connect();
  let app: App | undefined;
  let server: RunningServer | undefined;
  let bare: Server | undefined;
  const pool = new Pool({ connectionString: appDatabaseUrl(env), max: env.DB_POOL_SIZE, application_name: APP_NAME_BARE });
  let tenantId: string | undefined;
  let userId: string | undefined;
  try {
    app = await createApp(env);
    server = await startServer(app, { port: 0, host: '127.0.0.1' });
    bare = await startBare(env, pool);
    const fullOrigin = `http://127.0.0.1:${server.port}`;
    const bareOrigin = `http://127.0.0.1:${(bare.address() as AddressInfo).port}`;

    // A fresh tenant per run, on ENTERPRISE so rate limits stay out of the way.
    const tenancy = app.services.tenancy;
    const signedUp = await signUpBenchTenant(tenancy, owner, 'Gateway Bench');
    tenantId = signedUp.tenant.id;
    userId = signedUp.user.id;
    const principal = await tenancy.authenticate(signedUp.token);
    const { secret: apiKey } = await tenancy.createApiKey({ principal }, { name: 'gateway-bench', scopes: ['READ'] });

    // Correctness before speed: the baseline returns exactly what the full stack returns.
    const [fullJwt, bareJwt, fullKey] = await Promise.all([
      probe(fullOrigin, signedUp.token), probe(bareOrigin, signedUp.token), probe(fullOrigin, apiKey),
    ]);
    for (const [name, p] of [['full-stack JWT', fullJwt], ['bare', bareJwt], ['full-stack API key', fullKey]] as const) {
      if (p.status !== 200 || p.json.errors || !p.json.data?.me) throw new Error(`${name} probe failed: ${p.status} ${JSON.stringify(p.json)}`);
    }
    if (JSON.stringify(fullJwt.json.data!.me) !== JSON.stringify(bareJwt.json.data!.me)) {
      throw new Error(`bare and full stack disagree:\n  full ${JSON.stringify(fullJwt.json.data)}\n  bare ${JSON.stringify(bareJwt.json.data)}`);
    }

    const userExpect: Expect = {
      status: 200, absent: ['errors'],
      equals: { 'data.me.tenant.id': tenantId, 'data.me.tenant.status': 'ACTIVE', 'data.me.user.id': userId, 'data.me.role': 'OWNER' },
    };
    const targets: Target[] = [
      { name: 'bare node:http + pg (JWT)', origin: bareOrigin, token: signedUp.token, expect: userExpect },
      { name: 'full stack (JWT)', origin: fullOrigin, token: signedUp.token, expect: userExpect },
      {
        name: 'full stack (API key)', origin: fullOrigin, token: apiKey,
        expect: { status: 200, absent: ['errors'], equals: { 'data.me.tenant.id': tenantId, 'data.me.user': null, 'data.me.role': null } },
      },
    ];

    // Rounds interleave the targets, so a burst of outside load does not land on one row only.
    const redisPids = pidsNamed('redis-server');
    const runs: Measured[][] = targets.map(() => []);
    for (let r = 0; r < rounds; r++) {
      for (let i = 0; i < targets.length; i++) runs[i].push(await measureOnce(targets[i], opts, owner, redisPids));
    }
    const results = runs.map((rs) => merge(rs, opts));
    const hotspot = jwtVerifyMicros(env.JWT_SECRET, signedUp.token);

    const rows = results.map((m) => ({
      target: m.target.name,
      'req/s': m.rps,
      'p50 ms': m.latencyMs.p50,
      'p99 ms': m.latencyMs.p99,
      ok: m.ok,
      errors: m.errors,
      'rate-limited': m.errorKinds['status:429'] ?? 0,
      'server cpu ms/req': m.serverCpuMsPerReq,
      'pg cpu ms/req': m.pgCpuMsPerReq,
      'other load (cores)': m.coresUsed.everythingElse,
    }));

    const [b, j, k] = results;
    const ratio = (x: number, y: number) => round(x / y, 2);
    const vs = (m: typeof b, base: typeof b) => ({
      throughput: ratio(m.rps, base.rps),
      p50: ratio(m.latencyMs.p50, base.latencyMs.p50),
      p99: ratio(m.latencyMs.p99, base.latencyMs.p99),
      serverCpuPerRequest: ratio(m.serverCpuMsPerReq, base.serverCpuMsPerReq),
    });
    const rateLimited = results.reduce((a, m) => a + (m.errorKinds['status:429'] ?? 0), 0);
    return {
      name: 'gateway',
      rows,
      summary: {
        'fullStackJwt/bare': vs(j, b),
        'fullStackApiKey/bare': vs(k, b),
        'apiKey/jwt': vs(k, j),
        rateLimits: {
          mode: realLimits
            ? `real ENTERPRISE limits (${enterprise.tenantRps} rps per tenant, ${enterprise.keyRps} per key)`
            : 'ENTERPRISE limits raised to 1e6 rps in this process (the Redis token-bucket script still runs per request)',
          rateLimitedResponses: rateLimited,
          wouldExceedRealLimits: [j, k].filter((m, i) => m.rps > (i === 0 ? enterprise.tenantRps : enterprise.keyRps))
            .map((m) => `${m.target.name}: ${m.rps} req/s > ${m === j ? `tenant ${enterprise.tenantRps}` : `key ${enterprise.keyRps}`} rps`),
        },
        jwtVerifyMicroseconds: hotspot,
        detail: Object.fromEntries(results.map((m) => [m.target.name, {
          latencyMs: m.latencyMs, errorKinds: m.errorKinds, errorSamples: m.errorSamples, connections: m.connections,
          serverElu: m.serverElu, loadgenElu: m.loadgenElu, redisCpuMsPerReq: m.redisCpuMsPerReq, coresUsed: m.coresUsed,
        }])),
        config: {
          ...opts, rounds, dbPoolSize: env.DB_POOL_SIZE, query: ME,
          loadGenerator: 'bench/load.ts in a worker_thread (own event loop and isolate, same process); closed loop, keep-alive node:http Agent',
          cores: availableParallelism(), node: process.version, database: BENCH_DATABASE_URL.replace(/\/\/[^@]*@/, '//'),
          notes: [
            'req/s and latencies count only responses that passed the checks (status 200, no errors, right tenant/user/role)',
            'cpu ms/req = CPU time of the server thread (or of our Postgres backends) over the whole run, warm-up included, divided by all responses',
            'other load = cores used meanwhile by everything outside this process, our Postgres backends and Redis (other work on the machine)',
            'serverElu = event-loop utilisation of the server thread; loadgenElu of the generator thread (≳0.9 would mean client-bound)',
          ],
        },
      },
    };
  } finally {
    Object.assign(PLAN_LIMITS.ENTERPRISE, enterprise);
    await server?.close().catch(() => {});
    await new Promise<void>((r) => (bare ? bare.close(() => r()) : r()));
    await pool.end().catch(() => {});
    if (app) {
      const keys = await app.redis.keys(`${redisPrefix}:*`).catch(() => [] as string[]);
      if (keys.length) await app.redis.del(...keys).catch(() => {});
      await app.close().catch(() => {});
    }
    // The bench database is dedicated; drop this run's tenant (cascades to memberships, keys, audit) and user.
    if (tenantId) await owner.query('DELETE FROM tenants WHERE id = $1', [tenantId]).catch(() => {});
    if (userId) await owner.query('DELETE FROM users WHERE id = $1', [userId]).catch(() => {});
    await owner.end().catch(() => {});
  }
};

export default gateway;
