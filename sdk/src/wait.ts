import { NetworkError, NimbusError, WaitTimeoutError, errorFromGraphQL, type GraphQLErrorPayload } from './errors';
import { sleep, type TypedDocument } from './transport';
import type { SubscriptionConnection } from './websocket';

export const TERMINAL_STATUSES: ReadonlySet<string> = new Set(['SUCCEEDED', 'FAILED', 'CANCELED']);
export const isTerminal = (status: string) => TERMINAL_STATUSES.has(status);

export interface WaitOptions<J> {
  /** Called with the job whenever it changes (status, progress, logs, trials…), first with the state it is in. */
  onProgress?: (job: J) => void;
  /** Stops the wait: it rejects with `signal.reason` (and cancels the job first with `cancelOnAbort`). */
  signal?: AbortSignal;
  /** Gives up after this many ms with a WaitTimeoutError (the job goes on). */
  timeoutMs?: number;
  /** Cancel the job when `signal` aborts. */
  cancelOnAbort?: boolean;
  /** 'auto' (default): the subscription, else polling; 'polling' never opens a WebSocket. */
  transport?: 'auto' | 'subscription' | 'polling';
  /** First polling interval (ms, default 500); it grows ×1.5 up to maxPollIntervalMs (default 5000). */
  pollIntervalMs?: number;
  maxPollIntervalMs?: number;
}

/** How to read, cancel and subscribe to one kind of job. */
export interface JobAdapter<J extends { id: string; status: string }> {
  name: string;
  get(id: string, signal: AbortSignal): Promise<J>;
  cancel(id: string): Promise<unknown>;
  subscription: {
    document: TypedDocument<unknown, { id: string }>;
    /** The job in a subscription result (the subscription selects every field of J). */
    pick(data: unknown): J;
  } | null;
}

/**
 * Waits until a job ends: over the GraphQL subscription when a WebSocket is available, else (or
 * when the connection fails) by polling with exponential backoff. Resolves with the final job.
 */
export async function waitForJob<J extends { id: string; status: string }>(
  adapter: JobAdapter<J>, ws: SubscriptionConnection, id: string, opts: WaitOptions<J> = {},
): Promise<J> {
  const controller = new AbortController();
  let timedOut = false;
  const timer = opts.timeoutMs !== undefined ? setTimeout(() => {
    timedOut = true;
    controller.abort(new Error('timeout'));
  }, opts.timeoutMs) : null;
  const onUserAbort = () => controller.abort(opts.signal!.reason);
  if (opts.signal?.aborted) onUserAbort();
  else opts.signal?.addEventListener('abort', onUserAbort, { once: true });

  let last: J | null = null;
  let lastJson = '';
  const emit = (job: J) => {
    last = job;
    const json = JSON.stringify(job);
    if (json === lastJson) return;
    lastJson = json;
    opts.onProgress?.(job);
  };

  try {
    if (opts.transport !== 'polling' && adapter.subscription) {
      const done = await subscribe(adapter, ws, id, controller.signal, emit);
      if (done) return done;
      if (opts.transport === 'subscription') throw new NetworkError(`The ${adapter.name} subscription is unavailable`);
    }
    let delay = opts.pollIntervalMs ?? 500;
    for (;;) {
      // A read that fails for a while (the API restarting, a network blip, a 503: past the
      // transport's own retries) does not end an hours-long wait: polling goes on, backing off,
      // until the job ends, the wait times out or it is aborted. Other errors end it.
      const job = await adapter.get(id, controller.signal).catch((err: unknown) => {
        if (err instanceof NimbusError && TRANSIENT.has(err.code) && !controller.signal.aborted) return null;
        throw err;
      });
      if (job) {
        emit(job);
        if (isTerminal(job.status)) return job;
      }
      await sleep(delay, controller.signal);
      delay = Math.min(opts.maxPollIntervalMs ?? 5000, delay * 1.5);
    }
  } catch (err) {
    if (timedOut) throw new WaitTimeoutError(`The ${adapter.name} ${id} did not end within ${opts.timeoutMs} ms`, last);
    if (opts.signal?.aborted) {
      if (opts.cancelOnAbort) await adapter.cancel(id).catch(() => undefined);
      throw opts.signal.reason;
    }
    throw err;
  } finally {
    if (timer) clearTimeout(timer);
    opts.signal?.removeEventListener('abort', onUserAbort);
  }
}

/**
 * Follows the subscription until the job ends. Resolves with the final job, or null when the
 * subscription could not be used (no WebSocket, connection refused or lost, server closed it
 * early, an error without a contract code, RATE_LIMITED: too many subscriptions open, or the
 * request budget spent): the caller polls then, with backoff. Other GraphQL errors with a code
 * reject with the typed error.
 */
async function subscribe<J extends { id: string; status: string }>(
  adapter: JobAdapter<J>, ws: SubscriptionConnection, id: string, signal: AbortSignal, emit: (j: J) => void,
): Promise<J | null> {
  const client = await ws.get();
  if (!client) return null;
  const sub = adapter.subscription!;
  return new Promise<J | null>((resolve, reject) => {
    let settled = false;
    const finish = (fn: () => void) => {
      if (settled) return;
      settled = true;
      signal.removeEventListener('abort', onAbort);
      unsubscribe();
      fn();
    };
    const onAbort = () => finish(() => reject(signal.reason));
    const unsubscribe = client.subscribe<unknown>({ query: sub.document.toString(), variables: { id } }, {
      next: (result) => {
        if (result.errors?.length) {
          const errors = result.errors as unknown as GraphQLErrorPayload[];
          finish(() => (isFinal(errors) ? reject(errorFromGraphQL(errors)) : resolve(null)));
          return;
        }
        if (!result.data) return;
        const job = sub.pick(result.data);
        emit(job);
        if (isTerminal(job.status)) finish(() => resolve(job));
      },
      error: (err) => {
        // GraphQL errors with a contract code are final (NOT_FOUND, FORBIDDEN…); anything else
        // (connection refused or lost, an error without a code) falls back to polling, whose HTTP
        // answers carry the typed error if there is one.
        if (Array.isArray(err) && isFinal(err as GraphQLErrorPayload[])) finish(() => reject(errorFromGraphQL(err as GraphQLErrorPayload[])));
        else finish(() => resolve(null));
      },
      complete: () => finish(() => resolve(null)),
    });
    if (signal.aborted) onAbort();
    else signal.addEventListener('abort', onAbort, { once: true });
  });
}

/** What polling waits out rather than ends on. */
const TRANSIENT = new Set(['NETWORK_ERROR', 'SERVICE_UNAVAILABLE', 'RATE_LIMITED']);

/** An error with a contract code ends the wait, except RATE_LIMITED, which polling (rate limited on its own, with backoff) gets past. */
const isFinal = (errors: GraphQLErrorPayload[]) => {
  const code = errors[0]?.extensions?.code;
  return typeof code === 'string' && code !== 'RATE_LIMITED';
};
