import { Agent, request } from 'node:http';
import type { Socket } from 'node:net';
import { performance } from 'node:perf_hooks';
import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads';
import { percentile, round } from './harness';

/**
 * A small closed-loop HTTP load generator, shared by the benchmarks.
 *
 * `concurrency` virtual clients each keep exactly one request in flight over their own keep-alive
 * connection (an Agent with maxSockets = concurrency), for `warmupMs` (not recorded) then
 * `durationMs` (recorded). Every response is checked against `expect` and counted as ok or as an
 * error by kind; req/s and latency percentiles are over the ok responses that both started and
 * finished inside the measured window.
 *
 * It always runs in a worker_thread (see `runLoad`), never on the event loop of the server under
 * test: the thread has its own isolate, heap, GC and event loop, so the server's loop only sees
 * socket I/O, while results come back with a plain postMessage (no IPC serialisation, no second
 * `node` start-up). On a 2-core machine the generator, the server thread and Postgres/Redis still
 * share the CPUs; `loadgenElu` in the result (event-loop utilisation of the generator thread) says
 * whether the generator itself was close to saturation (≳ 0.9 means the numbers are client-bound).
 * One generator thread drives roughly 10k trivial requests/s on this 2-core box.
 *
 * Usage (from compiled code, i.e. `npm run bench`):
 *   const r = await runLoad({
 *     origin: 'http://127.0.0.1:4000', concurrency: 16, durationMs: 5000, warmupMs: 1000,
 *     requests: [{ method: 'POST', path: '/graphql', headers: { 'content-type': 'application/json' }, body }],
 *     expect: { status: 200, absent: ['errors'], equals: { 'data.me.tenant.id': tenantId } },
 *   });
 *   // r.rps, r.latencyMs.p50/p99, r.errors, r.errorKinds, r.completedTotal, r.loadgenElu
 */

export interface RequestSpec {
  method?: string;
  /** Path and query, e.g. `/graphql`. */
  path: string;
  headers?: Record<string, string>;
  body?: string;
}

/** Declarative response checks (functions cannot cross into the worker). */
export interface Expect {
  /** Expected HTTP status (default 200). */
  status?: number;
  /** Dotted JSON paths that must equal the given values (`null` matches null or a missing value). */
  equals?: Record<string, string | number | boolean | null>;
  /** Dotted JSON paths that must be absent or null (e.g. `errors`). */
  absent?: string[];
  /**
   * Optional custom check: a module (absolute path, loaded in the worker with require) exporting
   * `fn(status, body, arg) => string | null`; a string is an error kind.
   */
  validator?: { module: string; fn: string; arg?: unknown };
}

export interface LoadSpec {
  /** Base URL, e.g. `http://127.0.0.1:4000`; `requests[i].path` is appended. */
  origin: string;
  /** Sent round-robin per client; one entry is the usual case. */
  requests: RequestSpec[];
  concurrency: number;
  durationMs: number;
  warmupMs?: number;
  expect?: Expect;
  /** Per-request timeout (default 10 s); a timeout is an error of kind `timeout`. */
  timeoutMs?: number;
  /** Return every ok latency (ms, measured window) in `samples`, e.g. to merge several runs. */
  keepSamples?: boolean;
}

export interface LoadResult {
  /** ok responses per second within the measured window. */
  rps: number;
  ok: number;
  errors: number;
  /** error kind → count, e.g. `status:429`, `body:errors`, `mismatch:data.me.tenant.id`, `socket:ECONNRESET`. */
  errorKinds: Record<string, number>;
  /** First few error samples (status and a body prefix), for diagnosis. */
  errorSamples: Array<{ kind: string; status?: number; body?: string }>;
  latencyMs: { p50: number; p90: number; p99: number; max: number; mean: number };
  /** TCP connections opened during the whole run (warm-up included): concurrency when keep-alive holds. */
  connections: number;
  measuredMs: number;
  /** Responses of any kind over the whole run, warm-up included: divide server-side totals by this. */
  completedTotal: number;
  /** Event-loop utilisation of the generator thread over the measured window (0..1). */
  loadgenElu: number;
  /** Sorted ok latencies in ms, when `keepSamples` was set. */
  samples?: number[];
}

/** Runs one load in a fresh worker thread and resolves with its result. */
export function runLoad(spec: LoadSpec): Promise<LoadResult> {
  if (!__filename.endsWith('.js')) {
    throw new Error('bench/load must run compiled (npm run bench): the worker loads this file with plain node');
  }
  return new Promise((resolve, reject) => {
    const worker = new Worker(__filename, { workerData: { nimbusLoadSpec: spec } });
    let settled = false;
    worker.once('message', (msg: { result?: LoadResult; error?: string }) => {
      settled = true;
      if (msg.result) resolve(msg.result);
      else reject(new Error(`load worker failed: ${msg.error}`));
    });
    worker.once('error', (err) => {
      settled = true;
      reject(err);
    });
    worker.once('exit', (code) => {
      if (!settled) reject(new Error(`load worker exited with code ${code} before reporting`));
    });
  });
}

// ---------------------------------------------------------------------------------------------
// Worker side

interface Outcome {
  ok: boolean;
  kind?: string;
  status?: number;
  body?: string;
}

function getPath(obj: unknown, path: string): unknown {
  let cur: unknown = obj;
  for (const part of path.split('.')) {
    if (cur === null || cur === undefined || typeof cur !== 'object') return undefined;
    cur = (cur as Record<string, unknown>)[part];
  }
  return cur;
}

type Validator = (status: number, body: string, arg: unknown) => string | null;

function makeChecker(expect: Expect = {}): (status: number, body: string) => string | null {
  const status = expect.status ?? 200;
  const equals = Object.entries(expect.equals ?? {});
  const absent = expect.absent ?? [];
  const needJson = equals.length > 0 || absent.length > 0;
  let custom: Validator | undefined;
  if (expect.validator) {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    custom = (require(expect.validator.module) as Record<string, Validator>)[expect.validator.fn];
    if (typeof custom !== 'function') throw new Error(`validator ${expect.validator.fn} not found in ${expect.validator.module}`);
  }
  return (code, body) => {
    if (code !== status) return `status:${code}`;
    if (needJson) {
      let json: unknown;
      try {
        json = JSON.parse(body);
      } catch {
        return 'body:not-json';
      }
      for (const p of absent) {
        const v = getPath(json, p);
        if (v !== undefined && v !== null) return `body:${p}`;
      }
      for (const [p, want] of equals) {
        const v = getPath(json, p);
        if (want === null ? v !== null && v !== undefined : v !== want) return `mismatch:${p}`;
      }
    }
    return custom ? custom(code, body, expect.validator!.arg) : null;
  };
}

async function generate(spec: LoadSpec): Promise<LoadResult> {
  const origin = new URL(spec.origin);
  const host = origin.hostname;
  const port = Number(origin.port || 80);
  const agent = new Agent({ keepAlive: true, maxSockets: spec.concurrency, maxFreeSockets: spec.concurrency, scheduling: 'fifo' });
  const sockets = new WeakSet<Socket>();
  let connections = 0;
  const check = makeChecker(spec.expect);
  const timeoutMs = spec.timeoutMs ?? 10_000;
  const prepared = spec.requests.map((r) => {
    const body = r.body === undefined ? undefined : Buffer.from(r.body);
    const headers: Record<string, string | number> = { host: origin.host, ...(r.headers ?? {}) };
    if (body) headers['content-length'] = body.length;
    return { method: r.method ?? (body ? 'POST' : 'GET'), path: r.path, headers, body };
  });

  const once = (i: number): Promise<Outcome> =>
    new Promise((resolve) => {
      const r = prepared[i % prepared.length];
      let done = false;
      const finish = (o: Outcome) => {
        if (!done) {
          done = true;
          resolve(o);
        }
      };
      const req = request({ agent, host, port, method: r.method, path: r.path, headers: r.headers }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          const body = chunks.length === 1 ? chunks[0].toString() : Buffer.concat(chunks).toString();
          let kind: string | null;
          try {
            kind = check(res.statusCode ?? 0, body);
          } catch (err) {
            kind = `validator:${(err as Error).message}`;
          }
          finish(kind ? { ok: false, kind, status: res.statusCode, body: body.slice(0, 300) } : { ok: true });
        });
        res.on('error', (err: NodeJS.ErrnoException) => finish({ ok: false, kind: `socket:${err.code ?? err.message}` }));
      });
      req.on('socket', (s: Socket) => {
        if (!sockets.has(s)) {
          sockets.add(s);
          connections++;
        }
      });
      req.setTimeout(timeoutMs, () => {
        finish({ ok: false, kind: 'timeout' });
        req.destroy();
      });
      req.on('error', (err: NodeJS.ErrnoException) => finish({ ok: false, kind: `socket:${err.code ?? err.message}` }));
      req.end(r.body);
    });

  const t0 = performance.now();
  const measureFrom = t0 + (spec.warmupMs ?? 0);
  const measureTo = measureFrom + spec.durationMs;
  const latencies: number[] = [];
  const errorKinds: Record<string, number> = {};
  const errorSamples: LoadResult['errorSamples'] = [];
  let ok = 0;
  let errors = 0;
  let completedTotal = 0;
  let elu0: ReturnType<typeof performance.eventLoopUtilization> | undefined;
  const eluTimer = setTimeout(() => (elu0 = performance.eventLoopUtilization()), Math.max(0, measureFrom - performance.now()));

  const client = async (id: number) => {
    let n = id;
    for (;;) {
      const start = performance.now();
      if (start >= measureTo) return;
      const o = await once(n++);
      const end = performance.now();
      completedTotal++;
      const counted = start >= measureFrom && end <= measureTo;
      if (!o.ok) {
        if (counted) {
          errors++;
          errorKinds[o.kind!] = (errorKinds[o.kind!] ?? 0) + 1;
          if (errorSamples.length < 5) errorSamples.push({ kind: o.kind!, status: o.status, body: o.body });
        }
        // Do not spin on a refused connection.
        if (o.kind!.startsWith('socket:')) await new Promise((r) => setTimeout(r, 10));
      } else if (counted) {
        ok++;
        latencies.push(end - start);
      }
    }
  };
  await Promise.all(Array.from({ length: spec.concurrency }, (_, i) => client(i)));
  clearTimeout(eluTimer);
  const elu = elu0 ? performance.eventLoopUtilization(elu0).utilization : NaN;
  agent.destroy();

  latencies.sort((a, b) => a - b);
  const mean = latencies.length ? latencies.reduce((a, b) => a + b, 0) / latencies.length : NaN;
  return {
    rps: round(ok / (spec.durationMs / 1000), 1),
    ok,
    errors,
    errorKinds,
    errorSamples,
    latencyMs: {
      p50: round(percentile(latencies, 50)),
      p90: round(percentile(latencies, 90)),
      p99: round(percentile(latencies, 99)),
      max: round(latencies[latencies.length - 1] ?? NaN),
      mean: round(mean),
    },
    connections,
    measuredMs: spec.durationMs,
    completedTotal,
    loadgenElu: round(elu, 2),
    ...(spec.keepSamples ? { samples: latencies } : {}),
  };
}

if (!isMainThread && parentPort && (workerData as { nimbusLoadSpec?: LoadSpec } | null)?.nimbusLoadSpec) {
  const port = parentPort;
  generate((workerData as { nimbusLoadSpec: LoadSpec }).nimbusLoadSpec).then(
    (result) => port.postMessage({ result }),
    (err: Error) => port.postMessage({ error: err.stack ?? String(err) }),
  );
}
