import { randomBytes } from 'node:crypto';
import type { Redis } from 'ioredis';

export interface JobUpdate {
  jobId: string;
  tenantId?: string;
  status: string;
  progress?: number;
  /**
   * The job's view row as committed (VIEW_COLUMNS + billable_ms, see job-view.ts), when the control
   * plane had it at hand and it is small: a waiting request answers from it without reading Postgres.
   */
  row?: Record<string, unknown>;
}

/**
 * Job updates for this API process: one Redis subscription to the control plane's channel,
 * fanned out in memory to waiting `predict(wait:)` calls and GraphQL subscriptions.
 *
 * A control plane running in this same process (`npm start`, benchmarks) hands its updates over
 * directly (`deliverLocal`) and publishes them tagged with this bus's `origin`, which the bus then
 * skips when Redis brings them back: a waiting request is answered without the round trip through
 * Redis (two process wake-ups on the path of every synchronous prediction), and sees each update
 * once. Other API processes get them from Redis as before.
 */
export class JobUpdateBus {
  private readonly listeners = new Map<string, Set<(u: JobUpdate) => void>>();
  /** Tags the updates a co-located control plane has already delivered here. */
  readonly origin = randomBytes(6).toString('hex');
  private readonly ownSuffix = `,"o":"${this.origin}"}`;

  constructor(private readonly subscriber: Redis, private readonly channel: string) {}

  start(): Promise<unknown> {
    this.subscriber.on('message', (_ch, raw) => {
      if (raw.endsWith(this.ownSuffix)) return; // delivered in-process already
      this.dispatch(raw);
    });
    return this.subscriber.subscribe(this.channel);
  }

  /** An update message published with this bus's origin (see `tagged`), delivered here at once. */
  deliverLocal(raw: string): void {
    this.dispatch(raw);
  }

  /** The message to publish for an update also delivered with `deliverLocal`. */
  tagged(message: string): string {
    return `${message.slice(0, -1)}${this.ownSuffix}`;
  }

  private dispatch(raw: string): void {
    // Every API process receives every job's updates: parse only those someone here waits for.
    const id = jobIdOf(raw);
    if (id !== null && !this.listeners.has(id)) return;
    const u = JSON.parse(raw) as JobUpdate;
    for (const fn of this.listeners.get(u.jobId) ?? []) fn(u);
  }

  on(jobId: string, fn: (u: JobUpdate) => void): () => void {
    let set = this.listeners.get(jobId);
    if (!set) this.listeners.set(jobId, (set = new Set()));
    set.add(fn);
    let done = false;
    return () => {
      if (done) return; // idempotent: a second call must not drop a newer set of listeners
      done = true;
      set!.delete(fn);
      if (set!.size === 0 && this.listeners.get(jobId) === set) this.listeners.delete(jobId);
    };
  }

  /**
   * Collects the updates matching `until` from now on (register before acting, so none is missed).
   * `next(ms)` gives the first not yet taken, or null after `ms`; `cancel()` stops listening.
   */
  waiter(jobId: string, until: (u: JobUpdate) => boolean): { next(ms: number): Promise<JobUpdate | null>; cancel(): void } {
    const inbox = new Inbox();
    const off = this.on(jobId, (u) => {
      if (until(u)) inbox.push(u);
    });
    const next = async (ms: number) => {
      await inbox.wait(ms);
      return inbox.take();
    };
    return { next, cancel: off };
  }

  /**
   * An async iterator of updates for one job (GraphQL subscriptions). It yields `null` after
   * `idleMs` without an update (the reader may look for itself: pub/sub drops what is published
   * while the subscriber reconnects).
   */
  stream(jobId: string, signal: AbortSignal | undefined, idleMs: number): UpdateStream<JobUpdate | null> {
    // Listening starts now, not at the first next(): an update between this call and the reader's
    // first read of the job is queued, not lost.
    const inbox = new Inbox();
    const off = this.on(jobId, (u) => inbox.push(u));
    const abort = () => inbox.interrupt();
    signal?.addEventListener('abort', abort);
    const cancel = () => {
      off();
      signal?.removeEventListener('abort', abort);
    };
    async function* updates(): AsyncGenerator<JobUpdate | null> {
      try {
        while (!signal?.aborted) {
          await inbox.wait(idleMs);
          if (signal?.aborted) break;
          let u = inbox.take();
          if (u === null) yield null; // idle
          for (; u !== null; u = inbox.take()) yield u;
        }
      } finally {
        cancel();
      }
    }
    return Object.assign(updates(), { cancel });
  }
}

/** Updates queued as they arrive, and a wait that the next one, a timeout or `interrupt()` ends. */
class Inbox {
  private readonly queue: JobUpdate[] = [];
  private wake: (() => void) | null = null;

  push(u: JobUpdate): void {
    this.queue.push(u);
    this.wake?.();
  }

  interrupt(): void {
    this.wake?.();
  }

  take(): JobUpdate | null {
    return this.queue.shift() ?? null;
  }

  /** Returns at once when something is queued, else once something is, or after `ms`. */
  async wait(ms: number): Promise<void> {
    if (this.queue.length) return;
    let timer: NodeJS.Timeout | undefined;
    await new Promise<void>((r) => {
      this.wake = r;
      timer = setTimeout(r, ms);
    });
    clearTimeout(timer);
    this.wake = null;
  }
}

/** Updates of one job as they come; `cancel()` stops listening even if it was never iterated. */
export type UpdateStream<T> = AsyncGenerator<T> & { cancel(): void };

const PREFIX = '{"jobId":"';
const UUID_LENGTH = 36;

/** The job id of an update as every publisher writes it (`jobId` first), or null for anything else. */
export function jobIdOf(raw: string): string | null {
  if (!raw.startsWith(PREFIX) || raw.charCodeAt(PREFIX.length + UUID_LENGTH) !== 34 /* " */) return null;
  return raw.slice(PREFIX.length, PREFIX.length + UUID_LENGTH);
}
