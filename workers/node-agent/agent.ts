import { randomUUID } from 'node:crypto';
import { Worker, type Job as BullJob } from 'bullmq';
import { Redis } from 'ioredis';
import {
  HEARTBEAT_INTERVAL_MS, HEARTBEAT_TTL_MS, bullPrefix, keys, type DispatchMessage, type DispatchPayload, type Hardware, type NodeEvent, type NodeInfo,
} from '../../src/platform/queue/messages';
import type { RuntimeHost } from './runtimes/types';

export interface AgentOptions {
  name: string;
  hardware: Hardware;
  devices: number;
  gpuModel?: string | null;
  redisUrl: string;
  prefix: string;
  runtimes: RuntimeHost;
  log?: (msg: string, extra?: Record<string, unknown>) => void;
}

const PROGRESS_MIN_INTERVAL_MS = 200;
/**
 * A job's `started` event is sent only once it has run this long (or reports progress): most
 * predictions end sooner, and their `ended` event, which carries the start time, then records both
 * in one write. Start times stay exact; only RUNNING shows up this much later.
 */
const STARTED_EVENT_DELAY_MS = 100;
const EVENTS_MAXLEN = 100_000;
/** Failures before any work ran (the job's stored input was gone or unreadable): not billed. */
const UNBILLED_FAILURES = new Set(['INPUT_EXPIRED', 'INPUT_UNAVAILABLE']);
/** Services whose runs write state (checkpoints, artifacts): never started before the cancel check. */
const SIDE_EFFECTS = /^training(\.|$)/;

/** Registers a beat if the name's heartbeat is this instance's, or nobody's (it lapsed, Redis restarted empty): 1, else 0. */
const BEAT = `
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('SET', KEYS[2], ARGV[3])
redis.call('SADD', KEYS[3], ARGV[4])
return 1`;
/** Deletes the heartbeat only while it is this instance's. */
const RELEASE = `if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0`;

interface Running {
  controller: AbortController;
  jobId: string;
  attempt: number;
}

/**
 * A node agent: registers its devices, heartbeats (with the attempts it is running), pulls
 * dispatches from its own BullMQ queue, runs them on the model runtimes and streams started /
 * progress / ended events back. It knows only Redis; the control plane persists everything.
 */
export class NodeAgent {
  private readonly redis: Redis;
  private readonly subscriber: Redis;
  private worker: Worker<DispatchMessage> | null = null;
  private heartbeat: NodeJS.Timeout | null = null;
  /**
   * The attempts running here, by `job:attempt`: two attempts of one job can overlap on a node (a
   * stale one not yet stopped, its job re-admitted here), and each is stopped, reported and
   * cancelled on its own.
   */
  private readonly running = new Map<string, Running>();
  /** `job:attempt` of the attempts this node is running or about to (see runAttempt). */
  private readonly inProgress = new Set<string>();
  private readonly k: ReturnType<typeof keys>;
  private readonly startedAt = Date.now();
  /** Who holds the node name (claimName). */
  private readonly instance = randomUUID();

  constructor(private readonly opts: AgentOptions) {
    const conn = (n: string, autoPipelining = false) => {
      const r = new Redis(opts.redisUrl, {
        maxRetriesPerRequest: null, enableAutoPipelining: autoPipelining, connectionName: `${opts.prefix}:node:${opts.name}:${n}`,
      });
      r.on('error', () => undefined);
      return r;
    };
    // Events of jobs ending in the same tick share one write.
    this.redis = conn('main', true);
    this.subscriber = conn('sub');
    this.k = keys(opts.prefix);
  }

  async start(): Promise<void> {
    await this.claimName();
    await this.beat();
    this.heartbeat = setInterval(() => void this.beat().catch(() => undefined), HEARTBEAT_INTERVAL_MS);
    await this.subscriber.subscribe(this.k.cancel);
    this.subscriber.on('message', (_ch, msg) => this.onCancel(msg));
    this.worker = new Worker<DispatchMessage>(this.k.nodeQueue(this.opts.name), (job) => this.process(job), {
      connection: this.redis.duplicate({ enableAutoPipelining: false, connectionName: `${this.opts.prefix}:node:${this.opts.name}:worker` }),
      prefix: bullPrefix(this.opts.prefix),
      // Every attempt holds at least one device, so there are never more messages (each one attempt or a batch) than devices.
      concurrency: this.opts.devices,
      // A dispatch is one attempt: the control plane, not BullMQ, decides about retries.
      maxStalledCount: 0,
    });
    this.worker.on('error', (err) => this.opts.log?.('worker error', { err: err.message }));
    this.opts.log?.('node agent ready', { name: this.opts.name, hardware: this.opts.hardware, devices: this.opts.devices });
  }

  /** Graceful stop: deregisters so the control plane requeues at once rather than after the TTL. */
  async stop(): Promise<void> {
    if (this.heartbeat) clearInterval(this.heartbeat);
    for (const r of this.running.values()) r.controller.abort();
    await this.worker?.close(true);
    // Our heartbeat only: a node that took the name over keeps its own.
    await this.redis.eval(RELEASE, 1, this.k.heartbeat(this.opts.name), this.instance).catch(() => undefined);
    this.redis.disconnect();
    this.subscriber.disconnect();
  }

  private async beat(): Promise<void> {
    const info: NodeInfo = {
      name: this.opts.name, hardware: this.opts.hardware, devices: this.opts.devices, gpuModel: this.opts.gpuModel ?? null,
      startedAt: this.startedAt, running: [...this.running.keys()], beatAt: Date.now(),
    };
    const ours = await this.redis.eval(BEAT, 3, this.k.heartbeat(this.opts.name), this.k.node(this.opts.name), this.k.nodeSet,
      this.instance, HEARTBEAT_TTL_MS, JSON.stringify(info), this.opts.name);
    if (Number(ours) !== 1) this.opts.log?.('another node agent holds this node name: not registering over it', { name: this.opts.name });
    await this.abortCanceled();
  }

  /**
   * A node name is one agent's: its heartbeat key holds the agent's instance id. Two agents started
   * with one name overwrote each other's registration every beat, so the control plane saw the node
   * restart again and again and gave up every attempt on it. A second agent waits for the name (a
   * crashed predecessor's heartbeat lapses within HEARTBEAT_TTL_MS), then refuses to start.
   */
  private async claimName(): Promise<void> {
    const deadline = Date.now() + HEARTBEAT_TTL_MS + 1000;
    for (;;) {
      const got = await this.redis.set(this.k.heartbeat(this.opts.name), this.instance, 'PX', HEARTBEAT_TTL_MS, 'NX');
      if (got === 'OK') return;
      if (Date.now() > deadline) {
        this.redis.disconnect();
        this.subscriber.disconnect();
        throw new Error(`a node agent named ${this.opts.name} is already running: give this one another --name`);
      }
      await new Promise((r) => setTimeout(r, 250));
    }
  }

  /**
   * Cancellations and preemptions come over pub/sub, which drops what is published while this node
   * reconnects: each heartbeat also reads the markers of the jobs (canceled) and attempts (stopped)
   * it runs, so a lost message costs a second.
   */
  private async abortCanceled(): Promise<void> {
    const running = [...this.running.values()];
    if (running.length === 0) return;
    const pipe = this.redis.pipeline();
    for (const r of running) pipe.exists(this.k.canceled(r.jobId), this.k.stopped(r.jobId, r.attempt));
    const res = (await pipe.exec()) ?? [];
    running.forEach((r, i) => {
      if (Number(res[i]?.[1]) > 0) r.controller.abort();
    });
  }

  private onCancel(msg: string): void {
    const { jobId, attempt } = JSON.parse(msg) as { jobId: string; attempt?: number };
    for (const r of this.running.values()) {
      if (r.jobId === jobId && (attempt === undefined || attempt === r.attempt)) r.controller.abort();
    }
  }

  private emit(event: NodeEvent): Promise<unknown> {
    return this.redis.xadd(this.k.events, 'MAXLEN', '~', EVENTS_MAXLEN, '*', 'e', JSON.stringify(event));
  }

  /** A dispatch message: one attempt, or a batch of them (one admission round's share), all run at once. */
  private async process(job: BullJob<DispatchMessage>): Promise<void> {
    const d = job.data;
    if ('attempts' in d) await Promise.all(d.attempts.map((a) => this.runAttempt(a)));
    else await this.runAttempt(d);
  }

  /**
   * A dispatch can arrive twice (the reconciler re-sends one not started in time, in a message of its
   * own while a batch still holds it; BullMQ delivers at least once). A second copy that arrives while
   * this node runs the attempt is dropped; one that arrives later runs again, and the control plane,
   * whose writes are idempotent per attempt, records the first end (that is also how an attempt whose
   * end was lost with a Redis restart gets ended).
   */
  private async runAttempt(d: DispatchPayload): Promise<void> {
    const key = `${d.jobId}:${d.attempt}`;
    if (this.inProgress.has(key)) return;
    this.inProgress.add(key);
    try {
      await this.runOnce(d);
    } finally {
      this.inProgress.delete(key);
    }
  }

  private async runOnce(d: DispatchPayload): Promise<void> {
    const base = { jobId: d.jobId, attempt: d.attempt, node: this.opts.name };
    const ended = (status: 'SUCCEEDED' | 'FAILED' | 'CANCELED', startedAt: number | null, rest: Partial<Extract<NodeEvent, { type: 'ended' }>> = {}) =>
      this.emit({ type: 'ended', ...base, status, startedAt, endedAt: Date.now(), devices: d.devices, hardware: d.hardware, ...rest });

    if (d.deadlineAt && Date.now() > d.deadlineAt) {
      await ended('CANCELED', null, { error: { code: 'DEADLINE_EXCEEDED', message: 'The job did not start before its deadline' } });
      return;
    }
    const canceledBeforeStart = () => ended('CANCELED', null, { error: { code: 'CANCELED', message: 'canceled before it started' } });
    // Was it canceled while queued? Work with side effects (training) asks before it starts;
    // inference, which has none, starts at once and asks meanwhile: if it was canceled, its
    // result is dropped and the attempt ends CANCELED, unstarted and unbilled, as if it never ran.
    const speculative = !SIDE_EFFECTS.test(d.service);
    // Cancelled (the job), or stopped (this attempt: preempted, or given up as lost, while queued here).
    const canceledCheck = this.redis.exists(this.k.canceled(d.jobId), this.k.stopped(d.jobId, d.attempt)).then((n) => n > 0, () => false);
    if (!speculative && (await canceledCheck)) {
      await canceledBeforeStart();
      return;
    }
    const controller = new AbortController();
    if (speculative) {
      void canceledCheck.then((canceled) => {
        if (canceled) controller.abort();
      });
    }
    const key = `${d.jobId}:${d.attempt}`;
    this.running.set(key, { controller, jobId: d.jobId, attempt: d.attempt });
    const startedAt = Date.now();
    const t0 = performance.now();
    // Events go out on one connection, so `started` always precedes this attempt's progress and end.
    let startSent = false;
    const sendStart = () => {
      if (startSent) return;
      startSent = true;
      clearTimeout(startTimer);
      void this.emit({ type: 'started', ...base, at: startedAt });
    };
    const startTimer = setTimeout(sendStart, STARTED_EVENT_DELAY_MS);
    let lastProgress = 0;
    let pendingLogs: string[] = [];
    const flush = (progress?: number) => {
      sendStart();
      const logs = pendingLogs;
      pendingLogs = [];
      lastProgress = Date.now();
      void this.emit({ type: 'progress', ...base, progress, logs, at: lastProgress });
    };
    try {
      const result = await this.opts.runtimes.run(d.service, d.input, {
        signal: controller.signal,
        tenantId: d.tenantId,
        reportProgress: (p) => {
          if (Date.now() - lastProgress >= PROGRESS_MIN_INTERVAL_MS) flush(Math.max(0, Math.min(1, p)));
        },
        log: (line) => {
          pendingLogs.push(line.slice(0, 2000));
          if (Date.now() - lastProgress >= PROGRESS_MIN_INTERVAL_MS) flush();
        },
      });
      clearTimeout(startTimer);
      if (speculative && (await canceledCheck)) {
        await canceledBeforeStart();
        return;
      }
      if (pendingLogs.length) flush();
      await ended('SUCCEEDED', startedAt, { output: result.output, metrics: { ...result.metrics } as Record<string, number>, durationMs: performance.now() - t0 });
    } catch (err) {
      const e = err as Error & { code?: string };
      clearTimeout(startTimer);
      if (speculative && (await canceledCheck)) {
        await canceledBeforeStart();
        return;
      }
      if (pendingLogs.length) flush();
      const canceledNow = controller.signal.aborted || e.code === 'CANCELED';
      // Its stored input could not be had: nothing ran on the devices, so nothing is billed.
      const unstarted = !canceledNow && UNBILLED_FAILURES.has(e.code ?? '');
      await ended(canceledNow ? 'CANCELED' : 'FAILED', unstarted ? null : startedAt, {
        error: { code: canceledNow ? 'CANCELED' : (e.code ?? 'JOB_FAILED'), message: e.message }, durationMs: performance.now() - t0,
      });
    } finally {
      clearTimeout(startTimer);
      this.running.delete(key);
    }
  }
}
