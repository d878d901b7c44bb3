import { randomUUID } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import depthLimit from 'graphql-depth-limit';
import {
  GraphQLError, NoSchemaIntrospectionCustomRule, getOperationAST, parse, specifiedRules, validate, type DocumentNode, type ExecutionResult, type GraphQLFormattedError, type GraphQLSchema,
} from 'graphql';
import type { ServerOptions } from 'graphql-ws';
import type { App } from '../../app';
import { AppError, ErrorCode } from '../errors';
import type { Principal } from '../../modules/tenancy/principal';
import { PLAN_LIMITS } from '../../modules/tenancy/plans';
import type { GqlContext } from './context';
import { assertWithinCost, queryCost } from './cost';
import { MAX_DOCUMENT_TOKENS, TOO_COSTLY_MESSAGE } from './limits';
import { consumeRequestTokens } from './request-limits';

const isAsyncIterable = (x: unknown): x is AsyncIterable<ExecutionResult> =>
  typeof x === 'object' && x !== null && typeof (x as AsyncIterable<unknown>)[Symbol.asyncIterator] === 'function';

interface Extra {
  request: IncomingMessage;
  socket: { close(code?: number, reason?: string): void };
  token?: string;
  /** Subscriptions of this connection that hold a slot of their tenant's limit, by operation id. */
  held?: Map<string, string>;
  /** Each subscription's abort controller, by operation id (see onOperation). */
  aborts?: Map<string, AbortController>;
}

/**
 * graphql-ws options: every operation over a WebSocket passes the gates an HTTP request does,
 * each time it is sent (a connection lives long; its credential is checked per operation, so a
 * revoked API key stops subscribing at once): authentication, the tenant's and key's rate limits,
 * depth and cost limits, plus at most the plan's number of open subscriptions per tenant on this
 * process. Refusals are typed errors (UNAUTHENTICATED, RATE_LIMITED, QUERY_TOO_COSTLY, BAD_USER_INPUT).
 * Open connections are re-checked every `credentialRecheckMs` and closed once their credential fails.
 */
export function websocketOptions(
  app: App, schema: GraphQLSchema, formatError: (formatted: GraphQLFormattedError, error: unknown) => GraphQLFormattedError,
  opts: { credentialRecheckMs?: number } = {},
): { options: ServerOptions<{ authorization?: string }, Extra>; dispose(): void } {
  const { env } = app;
  // Open connections, whose credentials are checked again every few seconds: a connection whose
  // key was revoked, or whose token expired, is closed (4403), ending its open subscriptions too.
  const connections = new Set<Extra>();
  const recheck = setInterval(() => {
    // One check per distinct credential, however many connections share it.
    const byToken = new Map<string, Extra[]>();
    for (const extra of connections) {
      const list = byToken.get(extra.token!);
      if (list) list.push(extra);
      else byToken.set(extra.token!, [extra]);
    }
    for (const [token, extras] of byToken) {
      app.services.tenancy.authenticate(token).catch((err: unknown) => {
        if (!(err instanceof AppError) || err.code !== ErrorCode.UNAUTHENTICATED) return; // e.g. the database is down: not the client's fault
        for (const extra of extras) {
          connections.delete(extra);
          extra.socket.close(4403, 'Forbidden: the credential was revoked or has expired');
        }
      });
    }
  }, opts.credentialRecheckMs ?? 5000);
  recheck.unref();
  const open = new Map<string, number>();
  const release = (extra: Extra, id: string) => {
    const tenantId = extra.held?.get(id);
    if (tenantId === undefined) return;
    extra.held!.delete(id);
    const n = (open.get(tenantId) ?? 1) - 1;
    if (n > 0) open.set(tenantId, n);
    else open.delete(tenantId);
  };
  // As over HTTP: no introspection in production.
  const rules = [...specifiedRules, depthLimit(env.QUERY_DEPTH_LIMIT), ...(env.NODE_ENV === 'production' ? [NoSchemaIntrospectionCustomRule] : [])];
  const options: ServerOptions<{ authorization?: string }, Extra> = {
    schema,
    onConnect: async (ctx) => {
      const token = /^Bearer\s+(\S+)$/i.exec(String(ctx.connectionParams?.authorization ?? ''))?.[1];
      if (!token) return false;
      try {
        await app.services.tenancy.authenticate(token);
        ctx.extra.token = token;
        connections.add(ctx.extra);
        return true;
      } catch {
        return false;
      }
    },
    onSubscribe: async (ctx, id, payload) => {
      let principal: Principal;
      let document: DocumentNode;
      try {
        principal = await app.services.tenancy.authenticate(ctx.extra.token!);
        await consumeRequestTokens(app, principal, ctx.extra.request.socket.remoteAddress ?? 'unknown');
        try {
          document = parse(payload.query, { maxTokens: MAX_DOCUMENT_TOKENS });
        } catch (err) {
          const message = (err as Error).message;
          return [new GraphQLError(message, { extensions: { code: TOO_COSTLY_MESSAGE.test(message) ? ErrorCode.QUERY_TOO_COSTLY : ErrorCode.BAD_USER_INPUT } })];
        }
        const invalid = validate(schema, document, rules);
        if (invalid.length) {
          return invalid.map((e) => new GraphQLError(e.message, {
            nodes: e.nodes, extensions: { code: TOO_COSTLY_MESSAGE.test(e.message) ? ErrorCode.QUERY_TOO_COSTLY : ErrorCode.BAD_USER_INPUT },
          }));
        }
        const op = getOperationAST(document, payload.operationName);
        if (!op) return [new GraphQLError('Name the operation to run (operationName)', { extensions: { code: ErrorCode.BAD_USER_INPUT } })];
        assertWithinCost(queryCost(schema, document, payload.operationName ?? undefined, payload.variables ?? {}, env.QUERY_COST_LIMIT));
        if (op.operation === 'subscription') {
          const limit = PLAN_LIMITS[(await app.services.tenancy.tenantProfile(principal.tenantId)).plan].subscriptions;
          const n = open.get(principal.tenantId) ?? 0;
          if (n >= limit) {
            return [new GraphQLError(`At most ${limit} subscriptions may be open at once; complete one first`, {
              extensions: { code: ErrorCode.RATE_LIMITED, limit },
            })];
          }
          open.set(principal.tenantId, n + 1);
          (ctx.extra.held ??= new Map()).set(id, principal.tenantId);
        }
      } catch (err) {
        if (err instanceof AppError) return [err.toGraphQLError()];
        if (err instanceof GraphQLError) return [err];
        throw err;
      }
      const abort = new AbortController();
      (ctx.extra.aborts ??= new Map()).set(id, abort);
      const contextValue: GqlContext = { requestId: randomUUID(), principal, services: app.services, log: app.log, signal: abort.signal };
      return { schema, document, operationName: payload.operationName, variableValues: payload.variables, contextValue };
    },
    // graphql-ws ends a subscription by calling its iterator's return(), which an async generator
    // runs only once it next yields (a job's stream may wait seconds for an update): abort first,
    // so the stream stops waiting and its listener and slot are freed at once.
    onOperation: (ctx, id, _payload, _args, result) => {
      const abort = ctx.extra.aborts?.get(id);
      if (!abort || !isAsyncIterable(result)) return undefined;
      const inner = result[Symbol.asyncIterator]();
      return {
        [Symbol.asyncIterator]() {
          return this;
        },
        next: () => inner.next(),
        return: (value?: unknown) => {
          abort.abort();
          return inner.return?.(value) ?? Promise.resolve({ done: true, value: undefined });
        },
        throw: (err?: unknown) => inner.throw?.(err) ?? Promise.reject(err),
      } as AsyncGenerator<ExecutionResult>;
    },
    onComplete: (ctx, id) => {
      ctx.extra.aborts?.get(id)?.abort();
      ctx.extra.aborts?.delete(id);
      release(ctx.extra, id);
    },
    // A subscription whose execution threw never completes: its slot goes with the connection.
    onClose: (ctx) => {
      connections.delete(ctx.extra);
      for (const a of ctx.extra.aborts?.values() ?? []) a.abort();
      for (const id of [...(ctx.extra.held?.keys() ?? [])]) release(ctx.extra, id);
    },
    // The same contract error codes as over HTTP, for validation errors and for errors in results.
    onError: (_ctx, _id, _payload, errors) => errors.map((e) => formatError(e, e)),
    onNext: (_ctx, _id, _payload, _args, result) =>
      result.errors ? { ...result, errors: result.errors.map((e) => formatError(e, e)) } : undefined,
  };
  return { options, dispose: () => clearInterval(recheck) };
}
