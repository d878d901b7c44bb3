import { GraphQLError } from 'graphql';

/** Error codes of the public contract (operations.graphql header). */
export const ErrorCode = {
  UNAUTHENTICATED: 'UNAUTHENTICATED',
  FORBIDDEN: 'FORBIDDEN',
  BAD_USER_INPUT: 'BAD_USER_INPUT',
  NOT_FOUND: 'NOT_FOUND',
  CONFLICT: 'CONFLICT',
  RATE_LIMITED: 'RATE_LIMITED',
  QUERY_TOO_COSTLY: 'QUERY_TOO_COSTLY',
  QUOTA_EXCEEDED: 'QUOTA_EXCEEDED',
  SPEND_LIMIT_REACHED: 'SPEND_LIMIT_REACHED',
  PAYMENT_REQUIRED: 'PAYMENT_REQUIRED',
  SERVICE_UNAVAILABLE: 'SERVICE_UNAVAILABLE',
  INTERNAL: 'INTERNAL',
} as const;
export type ErrorCode = (typeof ErrorCode)[keyof typeof ErrorCode];

const HTTP_STATUS: Partial<Record<ErrorCode, number>> = {
  RATE_LIMITED: 429,
  SERVICE_UNAVAILABLE: 503,
};

/** The HTTP status an error with this code sets on its response, if it sets one. */
export const httpStatusOf = (code: ErrorCode): number | undefined => HTTP_STATUS[code];

/**
 * The one error type domain code throws. It carries a contract code and optional extensions
 * (e.g. `field` for BAD_USER_INPUT, `retryAfterSeconds` for RATE_LIMITED) and is turned into a
 * GraphQL error in one place (platform/graphql/errors.ts).
 */
export class AppError extends Error {
  constructor(
    readonly code: ErrorCode,
    message: string,
    readonly extensions: Record<string, unknown> = {},
  ) {
    super(message);
    this.name = 'AppError';
  }

  toGraphQLError(): GraphQLError {
    const status = HTTP_STATUS[this.code];
    return new GraphQLError(this.message, {
      extensions: { ...this.extensions, code: this.code, ...(status ? { http: { status } } : {}) },
    });
  }
}

export const badInput = (field: string, message: string) =>
  new AppError(ErrorCode.BAD_USER_INPUT, `${field}: ${message}`, { field });
export const notFound = (what: string) => new AppError(ErrorCode.NOT_FOUND, `${what} not found`);
export const forbidden = (message = 'Not allowed') => new AppError(ErrorCode.FORBIDDEN, message);
export const unauthenticated = (message = 'Authentication required') =>
  new AppError(ErrorCode.UNAUTHENTICATED, message);
export const conflict = (message: string) => new AppError(ErrorCode.CONFLICT, message);

// Postgres: connection failure / admin shutdown / cannot connect now / too many connections.
const PG_UNAVAILABLE_CODES = new Set(['08000', '08001', '08003', '08006', '57P01', '57P02', '57P03', '53300']);
const UNAVAILABLE_MESSAGE = new RegExp([
  'timeout exceeded when trying to connect', 'Connection terminated', 'Query read timeout', 'ECONNREFUSED', 'ECONNRESET', 'EPIPE',
  'Client has encountered a connection error', 'Connection is closed', 'max retries per request', 'Stream isn\'t writeable',
].join('|'), 'i');

/**
 * Whether an unexpected error means a backing service (Postgres, Redis) is down or not
 * answering, rather than a bug: a client should retry later (SERVICE_UNAVAILABLE), and nothing
 * about it is worth a stack trace in the logs. Looks through TypeORM's wrapper to the driver's error.
 */
export function isBackendUnavailable(err: unknown): boolean {
  for (let e = err as { code?: unknown; message?: unknown; name?: unknown; driverError?: unknown } | undefined, depth = 0; e && depth < 3;
    e = e.driverError as typeof e, depth++) {
    if (typeof e.code === 'string' && PG_UNAVAILABLE_CODES.has(e.code)) return true;
    if (e.name === 'MaxRetriesPerRequestError') return true;
    if (typeof e.message === 'string' && UNAVAILABLE_MESSAGE.test(e.message)) return true;
  }
  return false;
}

export const serviceUnavailable = () =>
  new AppError(ErrorCode.SERVICE_UNAVAILABLE, 'The service is temporarily unavailable; retry shortly');
