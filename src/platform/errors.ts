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
};

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
