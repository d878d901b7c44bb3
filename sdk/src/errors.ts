/**
 * Typed errors: one class per contract error code (`extensions.code`), plus NetworkError for
 * transport failures, WaitTimeoutError for `wait` and WebhookVerificationError for webhooks.
 * Every class extends NimbusError, so `catch (e) { if (e instanceof NimbusError) … }` catches all.
 */

/** One error of a GraphQL response, as the server sends it. */
export interface GraphQLErrorPayload {
  message: string;
  path?: ReadonlyArray<string | number>;
  extensions?: Record<string, unknown>;
}

export interface NimbusErrorOptions {
  code: string;
  /** The input field at fault (BAD_USER_INPUT), e.g. `input.service`. */
  field?: string;
  /** The server's `x-request-id` of the failing request: quote it when reporting a problem. */
  requestId?: string;
  /** HTTP status of the response, when there was one. */
  status?: number;
  extensions?: Record<string, unknown>;
  /** Every GraphQL error of the response (the first one made this error). */
  errors?: GraphQLErrorPayload[];
  cause?: unknown;
}

export class NimbusError extends Error {
  readonly code: string;
  readonly field: string | undefined;
  readonly requestId: string | undefined;
  readonly status: number | undefined;
  readonly extensions: Record<string, unknown>;
  readonly errors: GraphQLErrorPayload[];

  constructor(message: string, opts: NimbusErrorOptions) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = new.target.name;
    this.code = opts.code;
    this.field = opts.field;
    this.requestId = opts.requestId;
    this.status = opts.status;
    this.extensions = opts.extensions ?? {};
    this.errors = opts.errors ?? [];
  }
}

export class UnauthenticatedError extends NimbusError {}
export class ForbiddenError extends NimbusError {}
export class BadUserInputError extends NimbusError {}
export class NotFoundError extends NimbusError {}
export class ConflictError extends NimbusError {}
export class QueryTooCostlyError extends NimbusError {}
export class QuotaExceededError extends NimbusError {}
export class SpendLimitReachedError extends NimbusError {}
export class PaymentRequiredError extends NimbusError {}
export class ServiceUnavailableError extends NimbusError {
  /** Seconds the server (or a proxy in front of it) asked to wait, from Retry-After. */
  readonly retryAfterSeconds: number | undefined;
  constructor(message: string, opts: NimbusErrorOptions & { retryAfterSeconds?: number }) {
    super(message, opts);
    this.retryAfterSeconds = opts.retryAfterSeconds;
  }
}
export class InternalError extends NimbusError {}

export class RateLimitedError extends NimbusError {
  /** Seconds until the request would be accepted (from extensions.retryAfterSeconds or Retry-After). */
  readonly retryAfterSeconds: number | undefined;
  constructor(message: string, opts: NimbusErrorOptions & { retryAfterSeconds?: number }) {
    super(message, opts);
    this.retryAfterSeconds = opts.retryAfterSeconds;
  }
}

/** The request never got a GraphQL answer: connection refused or reset, DNS failure, timeout. */
export class NetworkError extends NimbusError {
  constructor(message: string, opts: Partial<NimbusErrorOptions> = {}) {
    super(message, { ...opts, code: 'NETWORK_ERROR' });
  }
}

/** `wait(…, { timeoutMs })` passed its time limit; the job goes on (see `job` for its last state). */
export class WaitTimeoutError extends NimbusError {
  constructor(message: string, readonly job: unknown) {
    super(message, { code: 'WAIT_TIMEOUT' });
  }
}

/** `verifyWebhook` refused a delivery: missing headers, stale timestamp or bad signature. */
export class WebhookVerificationError extends NimbusError {
  constructor(message: string) {
    super(message, { code: 'WEBHOOK_VERIFICATION_FAILED' });
  }
}

/** Contract error codes (operations.graphql) and the class each one is thrown as. */
export const ERROR_CLASSES = {
  UNAUTHENTICATED: UnauthenticatedError,
  FORBIDDEN: ForbiddenError,
  BAD_USER_INPUT: BadUserInputError,
  NOT_FOUND: NotFoundError,
  CONFLICT: ConflictError,
  RATE_LIMITED: RateLimitedError,
  QUERY_TOO_COSTLY: QueryTooCostlyError,
  QUOTA_EXCEEDED: QuotaExceededError,
  SPEND_LIMIT_REACHED: SpendLimitReachedError,
  PAYMENT_REQUIRED: PaymentRequiredError,
  SERVICE_UNAVAILABLE: ServiceUnavailableError,
  INTERNAL: InternalError,
} as const;
export type ErrorCode = keyof typeof ERROR_CLASSES;

/** The typed error for a GraphQL error payload; unknown codes (e.g. GRAPHQL_VALIDATION_FAILED) give a NimbusError. */
export function errorFromGraphQL(
  errors: GraphQLErrorPayload[],
  meta: { status?: number; requestId?: string; retryAfterHeader?: number } = {},
): NimbusError {
  const first = errors[0] ?? { message: 'Unknown error' };
  const extensions = { ...(first.extensions ?? {}) };
  const code = typeof extensions.code === 'string' ? extensions.code : meta.status === 429 ? 'RATE_LIMITED' : 'INTERNAL';
  const field = typeof extensions.field === 'string' ? extensions.field : undefined;
  const opts: NimbusErrorOptions = { code, field, requestId: meta.requestId, status: meta.status, extensions, errors };
  if (code === 'RATE_LIMITED') {
    const ext = Number(extensions.retryAfterSeconds);
    const retryAfterSeconds = Number.isFinite(ext) ? ext : meta.retryAfterHeader;
    return new RateLimitedError(first.message, { ...opts, retryAfterSeconds });
  }
  if (code === 'SERVICE_UNAVAILABLE') return new ServiceUnavailableError(first.message, { ...opts, retryAfterSeconds: meta.retryAfterHeader });
  const Class = (ERROR_CLASSES as Record<string, typeof NimbusError>)[code] ?? NimbusError;
  return new Class(first.message, opts);
}
