import { unwrapResolverError } from '@apollo/server/errors';
import type { GraphQLFormattedError } from 'graphql';
import { GraphQLError } from 'graphql';
import type { Logger } from 'pino';
import { AppError, ErrorCode, isBackendUnavailable, serviceUnavailable } from '../errors';
import { TOO_COSTLY_MESSAGE } from './limits';

const CONTRACT_CODES = new Set<string>(Object.values(ErrorCode));

/**
 * The one place where errors become what clients see: contract codes only, never a stack trace.
 * Anything unexpected is logged with its stack and answered as INTERNAL.
 */
export function makeFormatError(log: Logger) {
  return (formatted: GraphQLFormattedError, error: unknown): GraphQLFormattedError => {
    const unwrapped = unwrapResolverError(error);
    // Errors from a subscription's source stream are located errors without a path: unwrap them too.
    const original = unwrapped instanceof GraphQLError && unwrapped.originalError ? unwrapped.originalError : unwrapped;
    if (original instanceof AppError) {
      const e = original.toGraphQLError();
      return { message: e.message, path: formatted.path, locations: formatted.locations, extensions: strip(e.extensions) };
    }
    const code = String(formatted.extensions?.code ?? '');
    if (code === 'GRAPHQL_PARSE_FAILED' || code === 'GRAPHQL_VALIDATION_FAILED' || code === 'BAD_USER_INPUT') {
      const tooDeep = TOO_COSTLY_MESSAGE.test(formatted.message);
      return { ...formatted, extensions: { code: tooDeep ? ErrorCode.QUERY_TOO_COSTLY : ErrorCode.BAD_USER_INPUT } };
    }
    if (code === 'PERSISTED_QUERY_NOT_FOUND' || code === 'OPERATION_RESOLUTION_FAILURE' || code === 'BAD_REQUEST') {
      return { ...formatted, extensions: { code: ErrorCode.BAD_USER_INPUT } };
    }
    if (CONTRACT_CODES.has(code)) return { ...formatted, extensions: strip(formatted.extensions) };
    if (isBackendUnavailable(original)) {
      log.warn({ err: (original as Error)?.message }, 'a backing service is unavailable');
      const e = serviceUnavailable();
      return { message: e.message, path: formatted.path, extensions: { code: e.code } };
    }
    log.error({ err: original }, 'unhandled error in GraphQL request');
    return { message: 'Internal server error', path: formatted.path, extensions: { code: ErrorCode.INTERNAL } };
  };
}

function strip(ext: Record<string, unknown> | undefined) {
  const { stacktrace: _s, http: _h, ...rest } = ext ?? {};
  return rest;
}
