import {
  NetworkError, NimbusError, RateLimitedError, ServiceUnavailableError, InternalError, errorFromGraphQL,
  type GraphQLErrorPayload,
} from './errors';
import { SDK_VERSION } from './version';

/**
 * A GraphQL document typed with its result and variables (the generated `…Document` constants;
 * structurally the same as @graphql-typed-document-node/core's DocumentTypeDecoration).
 */
export interface TypedDocument<TResult, TVariables> {
  __apiType?: (variables: TVariables) => TResult;
  toString(): string;
}

export type FetchLike = (input: string | URL, init?: RequestInit) => Promise<Response>;

export interface RequestOptions {
  /**
   * Safe to send twice: queries, and mutations that carry an idempotency key or set a value.
   * Only idempotent requests are retried on RATE_LIMITED, SERVICE_UNAVAILABLE and network errors.
   */
  idempotent?: boolean;
  signal?: AbortSignal;
  /** Per-attempt time limit in ms (defaults to the client's timeoutMs). */
  timeoutMs?: number;
  /** Overrides the client's maxRetries for this call. */
  maxRetries?: number;
}

export interface TransportOptions {
  url: string;
  token: string | undefined;
  fetch: FetchLike;
  maxRetries: number;
  timeoutMs: number;
  headers: Record<string, string>;
  /** Longest server-requested wait (Retry-After) the client sleeps through before giving up. */
  maxRetryAfterSeconds: number;
}

const RETRYABLE = new Set(['RATE_LIMITED', 'SERVICE_UNAVAILABLE', 'NETWORK_ERROR']);

/** Sends GraphQL over HTTP POST with typed errors and retries (jittered exponential backoff). */
export class Transport {
  constructor(readonly opts: TransportOptions) {}

  async request<R, V>(doc: TypedDocument<R, V>, variables: V, ro: RequestOptions = {}): Promise<R> {
    const query = doc.toString();
    const operationName = /\b(?:query|mutation|subscription)\s+(\w+)/.exec(query)?.[1];
    const body = JSON.stringify({ query, variables: variables ?? {}, ...(operationName ? { operationName } : {}) });
    const maxRetries = ro.maxRetries ?? this.opts.maxRetries;
    const requestId = `sdk-${randomId()}`;
    for (let attempt = 0; ; attempt++) {
      try {
        return await this.once<R>(body, requestId, ro);
      } catch (err) {
        if (!(err instanceof NimbusError) || !RETRYABLE.has(err.code) || !ro.idempotent || attempt >= maxRetries) throw err;
        const delay = retryDelayMs(err, attempt);
        if (delay > this.opts.maxRetryAfterSeconds * 1000) throw err;
        await sleep(delay, ro.signal);
      }
    }
  }

  private async once<R>(body: string, requestId: string, ro: RequestOptions): Promise<R> {
    const timeoutMs = ro.timeoutMs ?? this.opts.timeoutMs;
    const timeout = AbortSignal.timeout(timeoutMs);
    const signal = ro.signal ? AbortSignal.any([ro.signal, timeout]) : timeout;
    let res: Response;
    let text: string;
    try {
      res = await this.opts.fetch(this.opts.url, {
        method: 'POST',
        headers: {
          'content-type': 'application/json',
          accept: 'application/graphql-response+json, application/json',
          'x-request-id': requestId,
          ...(this.opts.token ? { authorization: `Bearer ${this.opts.token}` } : {}),
          ...this.opts.headers,
        },
        body,
        signal,
      });
      text = await res.text();
    } catch (err) {
      if (ro.signal?.aborted) throw ro.signal.reason;
      if (timeout.aborted) throw new NetworkError(`No response from ${this.opts.url} within ${timeoutMs} ms`, { requestId, cause: err });
      throw new NetworkError(`Request to ${this.opts.url} failed: ${describe(err)}`, { requestId, cause: err });
    }
    const serverRequestId = res.headers.get('x-request-id') ?? requestId;
    const retryAfterHeader = parseRetryAfter(res.headers.get('retry-after'));
    let json: { data?: R | null; errors?: GraphQLErrorPayload[] } | undefined;
    try {
      json = text ? JSON.parse(text) : undefined;
    } catch {
      json = undefined;
    }
    if (json && Array.isArray(json.errors) && json.errors.length > 0) {
      throw errorFromGraphQL(json.errors, { status: res.status, requestId: serverRequestId, retryAfterHeader });
    }
    if (json && json.data != null && res.ok) return json.data;
    const meta = { code: '', status: res.status, requestId: serverRequestId };
    const snippet = text.slice(0, 200).replace(/\s+/g, ' ').trim();
    if (res.status === 429) {
      throw new RateLimitedError(`HTTP 429 from ${this.opts.url}`, { ...meta, code: 'RATE_LIMITED', retryAfterSeconds: retryAfterHeader });
    }
    if (res.status === 502 || res.status === 503 || res.status === 504) {
      throw new ServiceUnavailableError(`HTTP ${res.status} from ${this.opts.url}${snippet ? `: ${snippet}` : ''}`, { ...meta, code: 'SERVICE_UNAVAILABLE', retryAfterSeconds: retryAfterHeader });
    }
    if (res.status >= 500) throw new InternalError(`HTTP ${res.status} from ${this.opts.url}${snippet ? `: ${snippet}` : ''}`, { ...meta, code: 'INTERNAL' });
    throw new NimbusError(`Unexpected response (HTTP ${res.status}) from ${this.opts.url}${snippet ? `: ${snippet}` : ''}`, { ...meta, code: 'BAD_RESPONSE' });
  }
}

/**
 * Delay before retry `attempt` (0-based): exponential from 500 ms, capped at 8 s, with "equal
 * jitter" (half fixed, half random) so clients that failed together do not retry together. A
 * RATE_LIMITED or SERVICE_UNAVAILABLE answer with a Retry-After says when to come back: that,
 * plus up to 250 ms of jitter.
 */
export function retryDelayMs(err: NimbusError, attempt: number, random = Math.random): number {
  // Retry-After (RATE_LIMITED, or a 503 from a proxy in maintenance) says when to come back.
  if ((err instanceof RateLimitedError || err instanceof ServiceUnavailableError) && err.retryAfterSeconds !== undefined) {
    return err.retryAfterSeconds * 1000 + random() * 250;
  }
  const base = Math.min(8000, 500 * 2 ** attempt);
  return base / 2 + random() * (base / 2);
}

export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal!.reason);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

export function randomId(): string {
  const c = (globalThis as { crypto?: { randomUUID?: () => string } }).crypto;
  if (c?.randomUUID) return c.randomUUID();
  return `${Date.now().toString(36)}-${Math.random().toString(36).slice(2)}-${Math.random().toString(36).slice(2)}`;
}

function parseRetryAfter(value: string | null): number | undefined {
  if (!value) return undefined;
  const n = Number(value);
  if (Number.isFinite(n)) return n;
  const at = Date.parse(value);
  return Number.isNaN(at) ? undefined : Math.max(0, (at - Date.now()) / 1000);
}

function describe(err: unknown): string {
  if (err instanceof Error) {
    const cause = (err as { cause?: unknown }).cause;
    const detail = cause instanceof Error ? cause.message : cause && typeof cause === 'object' && 'code' in cause ? String((cause as { code: unknown }).code) : '';
    return detail && detail !== err.message ? `${err.message} (${detail})` : err.message;
  }
  return String(err);
}

export const USER_AGENT = `nimbus-sdk-js/${SDK_VERSION}`;
