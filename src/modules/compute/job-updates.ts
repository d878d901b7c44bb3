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
 */
export class JobUpdateBus {
  private readonly listeners = new Map<string, Set<(u: JobUpdate) => void>>();

  constructor(private readonly subscriber: Redis, private readonly channel: string) {}

  start(): Promise<unknown> {
    this.subscriber.on('message', (_ch, raw) => {
      const u = JSON.parse(raw) as JobUpdate;
      for (const fn of this.listeners.get(u.jobId) ?? []) fn(u);
    });
    return this.subscriber.subscribe(this.channel);
  }

  on(jobId: string, fn: (u: JobUpdate) => void): () => void {
    let set = this.listeners.get(jobId);
    if (!set) this.listeners.set(jobId, (set = new Set()));
    set.add(fn);
    return () => {
      set!.delete(fn);
      if (set!.size === 0) this.listeners.delete(jobId);
    };
  }

  /** Resolves with the first update matching `until`, or null after `ms`; register before acting to avoid a race. */
  waiter(jobId: string, until: (u: JobUpdate) => boolean): { promise(ms: number): Promise<JobUpdate | null>; cancel(): void } {
    let resolve!: (u: JobUpdate) => void;
    const done = new Promise<JobUpdate>((r) => (resolve = r));
    const off = this.on(jobId, (u) => {
      if (until(u)) resolve(u);
    });
    return {
      promise: async (ms) => {
        let timer: NodeJS.Timeout | undefined;
        const u = await Promise.race([done, new Promise<null>((r) => (timer = setTimeout(() => r(null), ms)))]);
        clearTimeout(timer);
        off();
        return u;
      },
      cancel: off,
    };
  }

  /**
   * An async iterator of updates for one job (GraphQL subscriptions). With `idleMs`, it yields
   * `null` after that long without an update (the reader may look for itself: pub/sub drops what
   * is published while the subscriber reconnects).
   */
  stream(jobId: string, signal?: AbortSignal): AsyncGenerator<JobUpdate>;
  stream(jobId: string, signal: AbortSignal | undefined, idleMs: number): AsyncGenerator<JobUpdate | null>;
  async *stream(jobId: string, signal?: AbortSignal, idleMs?: number): AsyncGenerator<JobUpdate | null> {
    const queue: JobUpdate[] = [];
    let wake: (() => void) | null = null;
    const off = this.on(jobId, (u) => {
      queue.push(u);
      wake?.();
    });
    const abort = () => wake?.();
    signal?.addEventListener('abort', abort);
    try {
      while (!signal?.aborted) {
        if (queue.length === 0) {
          let timer: NodeJS.Timeout | undefined;
          await new Promise<void>((r) => {
            wake = r;
            if (idleMs !== undefined) timer = setTimeout(r, idleMs);
          });
          clearTimeout(timer);
        }
        wake = null;
        if (signal?.aborted) break;
        if (queue.length === 0) yield null; // idle
        while (queue.length) yield queue.shift()!;
      }
    } finally {
      off();
      signal?.removeEventListener('abort', abort);
    }
  }
}
