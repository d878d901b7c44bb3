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
 * Job updates for this API process, one Redis pub/sub channel per job (`keys().jobUpdates(id)`):
 * the process subscribes to a job's channel while someone here listens to it (a waiting
 * `predict(wait:)`, a GraphQL subscription) and unsubscribes after, so an API process receives
 * the updates of the jobs it waits for, not every job's of every tenant (with one shared
 * channel, each of N API processes would read, and Redis would write N times, every update,
 * outputs included). An update nobody listens to costs Redis one PUBLISH to an empty channel.
 *
 * A subscription starts with the first listener, and Redis may take it after the job has moved
 * on: what was published before is never delivered. `recheckUnlessSubscribed()` (call it right
 * before reading the job or making it visible) covers that window: unless Redis has already
 * confirmed the subscription, the listener's next wait returns empty once it does, and the
 * caller reads the job for itself.
 *
 * A control plane running in this same process (`npm start`, benchmarks) hands its updates over
 * directly (`deliverLocal`) and publishes them tagged with this bus's `origin`, which the bus then
 * skips when Redis brings them back: a waiting request is answered without the round trip through
 * Redis (two process wake-ups on the path of every synchronous prediction), and sees each update
 * once. Other API processes get them from Redis as before.
 */
export class JobUpdateBus {
  private readonly listeners = new Map<string, Listeners>();
  /** Tags the updates a co-located control plane has already delivered here. */
  readonly origin = randomBytes(6).toString('hex');
  private readonly ownSuffix = `,"o":"${this.origin}"}`;

  constructor(private readonly subscriber: Redis, private readonly channelOf: (jobId: string) => string) {}

  start(): Promise<unknown> {
    this.subscriber.on('message', (_ch, raw) => {
      if (raw.endsWith(this.ownSuffix)) return; // delivered in-process already
      this.dispatch(raw);
    });
    return Promise.resolve();
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
    // Only listened-to jobs' channels are subscribed, but an update may still come in after the
    // last listener left (the UNSUBSCRIBE in flight) or for another shape: parse only what is wanted.
    const id = jobIdOf(raw);
    if (id !== null && !this.listeners.has(id)) return;
    const u = JSON.parse(raw) as JobUpdate;
    for (const fn of this.listeners.get(u.jobId)?.fns ?? []) fn(u);
  }

  /** Jobs whose channel this process is subscribed to (or subscribing to) now. */
  get subscribedJobs(): number {
    return this.listeners.size;
  }

  on(jobId: string, fn: (u: JobUpdate) => void): () => void {
    const entry = this.listen(jobId);
    entry.fns.add(fn);
    let done = false;
    return () => {
      if (done) return; // idempotent: a second call must not drop a newer set of listeners
      done = true;
      entry.fns.delete(fn);
      if (entry.fns.size === 0 && this.listeners.get(jobId) === entry) {
        this.listeners.delete(jobId);
        void this.subscriber.unsubscribe(this.channelOf(jobId)).catch(() => undefined);
      }
    };
  }

  /** The job's listeners, subscribing to its channel for the first one. */
  private listen(jobId: string): Listeners {
    const found = this.listeners.get(jobId);
    if (found) return found;
    let confirm!: () => void;
    const entry: Listeners = { fns: new Set(), subscribed: false, ready: new Promise<void>((r) => (confirm = r)) };
    this.listeners.set(jobId, entry);
    // The connection queues commands while it reconnects, and subscribes again to its channels
    // after: a SUBSCRIBE sent now is confirmed once Redis is back. A refused one (a closed
    // connection) confirms nothing: listeners read the job when their waits run out.
    this.subscriber.subscribe(this.channelOf(jobId)).then(() => {
      entry.subscribed = true;
      confirm();
    }, () => undefined);
    return entry;
  }

  /** See the class comment: unless the job's subscription is confirmed, poke `inbox` once it is. */
  private recheckUnlessSubscribed(jobId: string, inbox: Inbox): void {
    const entry = this.listeners.get(jobId);
    if (!entry || entry.subscribed) return;
    void entry.ready.then(() => inbox.interrupt());
  }

  /**
   * Collects the updates matching `until` from now on (register before acting, so none is missed).
   * `next(ms)` gives the first not yet taken, or null after `ms`; `cancel()` stops listening.
   */
  waiter(jobId: string, until: (u: JobUpdate) => boolean): Waiter {
    const inbox = new Inbox();
    const off = this.on(jobId, (u) => {
      if (until(u)) inbox.push(u);
    });
    const next = async (ms: number) => {
      await inbox.wait(ms);
      return inbox.take();
    };
    return { next, cancel: off, interrupt: () => inbox.interrupt(), recheckUnlessSubscribed: () => this.recheckUnlessSubscribed(jobId, inbox) };
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
    return Object.assign(updates(), { cancel, recheckUnlessSubscribed: () => this.recheckUnlessSubscribed(jobId, inbox) });
  }
}

interface Listeners {
  fns: Set<(u: JobUpdate) => void>;
  /** Redis has confirmed the job's SUBSCRIBE (`ready` resolved). */
  subscribed: boolean;
  ready: Promise<void>;
}

/** One job's updates matching a condition, taken one by one. */
export interface Waiter {
  /** The first update not yet taken, or null after `ms` (or once poked: `recheckUnlessSubscribed`). */
  next(ms: number): Promise<JobUpdate | null>;
  cancel(): void;
  /** Ends the current (or next) wait at once, empty. */
  interrupt(): void;
  /** Call right before reading the job or making it visible; see JobUpdateBus. */
  recheckUnlessSubscribed(): void;
}

/** Updates queued as they arrive, and a wait that the next one, a timeout or `interrupt()` ends (an interrupt between waits ends the next one). */
class Inbox {
  private readonly queue: JobUpdate[] = [];
  private wake: (() => void) | null = null;
  /** Interrupted with no wait in progress: the next wait returns at once. */
  private poked = false;

  push(u: JobUpdate): void {
    this.queue.push(u);
    this.wake?.();
  }

  interrupt(): void {
    if (this.wake) this.wake();
    else this.poked = true;
  }

  take(): JobUpdate | null {
    return this.queue.shift() ?? null;
  }

  /** Returns at once when something is queued, else once something is, or after `ms`. */
  async wait(ms: number): Promise<void> {
    if (this.queue.length) return;
    if (this.poked) {
      this.poked = false;
      return;
    }
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
export type UpdateStream<T> = AsyncGenerator<T> & { cancel(): void; recheckUnlessSubscribed(): void };

const PREFIX = '{"jobId":"';
const UUID_LENGTH = 36;

/** The job id of an update as every publisher writes it (`jobId` first), or null for anything else. */
export function jobIdOf(raw: string): string | null {
  if (!raw.startsWith(PREFIX) || raw.charCodeAt(PREFIX.length + UUID_LENGTH) !== 34 /* " */) return null;
  return raw.slice(PREFIX.length, PREFIX.length + UUID_LENGTH);
}
