import { randomUUID } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { ApolloServer, type ApolloServerPlugin } from '@apollo/server';
import { ApolloServerPluginDrainHttpServer } from '@apollo/server/plugin/drainHttpServer';
import { ApolloServerPluginLandingPageDisabled } from '@apollo/server/plugin/disabled';
import { ApolloServerPluginLandingPageLocalDefault } from '@apollo/server/plugin/landingPage/default';
import { expressMiddleware } from '@as-integrations/express5';
import express, { type NextFunction, type Request, type Response } from 'express';
import { useServer } from 'graphql-ws/use/ws';
import { WebSocketServer } from 'ws';
import depthLimit from 'graphql-depth-limit';
import { GraphQLError, type GraphQLSchema } from 'graphql';
import type { App } from './app';
import { AppError, ErrorCode, httpStatusOf, isBackendUnavailable, serviceUnavailable, unauthenticated } from './platform/errors';
import type { GqlContext } from './platform/graphql/context';
import { costPlugin } from './platform/graphql/cost';
import { MAX_BODY_BYTES, MAX_DOCUMENT_TOKENS } from './platform/graphql/limits';
import { makeFormatError } from './platform/graphql/errors';
import { consumeRequestTokens } from './platform/graphql/request-limits';
import { websocketOptions } from './platform/graphql/websocket';
import { buildNimbusSchema } from './platform/graphql/schema';
import type { Principal } from './modules/tenancy/principal';
import { uploadHandler } from './modules/training/upload-route';
import { metricsAuthorized } from './platform/http/metrics-server';

/**
 * A response whose every error is SERVICE_UNAVAILABLE and that has no data answers HTTP 503, so
 * load balancers and clients' retry logic see an outage as one.
 */
function unavailableStatusPlugin(): ApolloServerPlugin<GqlContext> {
  return {
    async requestDidStart() {
      return {
        async willSendResponse({ response }) {
          if (response.body.kind !== 'single') return;
          const { errors, data } = response.body.singleResult;
          if (errors?.length && !data && errors.every((e) => e.extensions?.code === ErrorCode.SERVICE_UNAVAILABLE)) response.http.status = 503;
        },
      };
    },
  };
}

export interface RunningServer {
  url: string;
  port: number;
  httpServer: Server;
  schema: GraphQLSchema;
  close(): Promise<void>;
}

/** HTTP front of the API: GraphQL at /graphql, health at /healthz and /readyz, Prometheus at /metrics. */
export async function startServer(app: App, opts: { port?: number; host?: string } = {}): Promise<RunningServer> {
  const { env, log } = app;
  const schema = await buildNimbusSchema();
  const expressApp = express();
  expressApp.disable('x-powered-by');
  const httpServer = createServer(expressApp);
  const production = env.NODE_ENV === 'production';

  // Subscriptions over graphql-ws on the same path; the credential comes in connectionParams.authorization.
  // Messages as large as an HTTP body may be, not ws's default of 100 MiB.
  const wss = new WebSocketServer({ server: httpServer, path: '/graphql', maxPayload: MAX_BODY_BYTES });
  const formatError = makeFormatError(log);
  const ws = websocketOptions(app, schema, formatError, { credentialRecheckMs: env.WS_CREDENTIAL_RECHECK_MS });
  const wsCleanup = useServer(ws.options, wss);

  const apollo = new ApolloServer<GqlContext>({
    schema,
    introspection: !production,
    csrfPrevention: true,
    includeStacktraceInErrorResponses: false,
    parseOptions: { maxTokens: MAX_DOCUMENT_TOKENS },
    validationRules: [depthLimit(env.QUERY_DEPTH_LIMIT)],
    formatError,
    plugins: [
      ApolloServerPluginDrainHttpServer({ httpServer }),
      {
        async serverWillStart() {
          return {
            async drainServer() {
              ws.dispose();
              await wsCleanup.dispose();
            },
          };
        },
      },
      production ? ApolloServerPluginLandingPageDisabled() : ApolloServerPluginLandingPageLocalDefault({ embed: true }),
      costPlugin(() => schema, env.QUERY_COST_LIMIT),
      app.metrics.apolloPlugin(),
      unavailableStatusPlugin(),
    ],
  });
  await apollo.start();

  expressApp.use((req, res, next) => {
    const incoming = req.header('x-request-id');
    const id = incoming && /^[\w.-]{1,100}$/.test(incoming) ? incoming : randomUUID();
    res.locals.requestId = id;
    res.setHeader('x-request-id', id);
    next();
  });
  expressApp.get('/healthz', (_req, res) => {
    res.json({ status: 'ok' });
  });
  expressApp.get('/readyz', async (_req, res) => {
    const checks = await Promise.all([
      app.db.ping().then(() => 'ok', (e: Error) => e.message),
      app.redis.ping().then(() => 'ok', (e: Error) => e.message),
    ]);
    const ready = checks.every((c) => c === 'ok');
    res.status(ready ? 200 : 503).json({ status: ready ? 'ok' : 'unavailable', postgres: checks[0], redis: checks[1] });
  });
  expressApp.get('/metrics', async (req, res) => {
    if (!metricsAuthorized(req.headers, env.METRICS_TOKEN)) return void res.status(401).set('www-authenticate', 'Bearer').end();
    res.type(app.metrics.registry.contentType).send(await app.metrics.registry.metrics());
  });
  // Signed dataset upload URLs: the body streams to the artifact store (no body parser before it).
  expressApp.put('/uploads/:id', uploadHandler(() => app.services.datasets));
  // Stripe signs the exact bytes it sent: the raw body, never a parsed one (so no JSON parser before this).
  expressApp.post('/webhooks/stripe', express.raw({ type: 'application/json', limit: '1mb' }), async (req, res) => {
    try {
      const raw = Buffer.isBuffer(req.body) ? req.body : Buffer.alloc(0);
      const out = await app.services.billing.handleStripeWebhook(raw, req.header('stripe-signature'));
      res.status(out.status).json(out.body);
    } catch (err) {
      log.error({ err }, 'Stripe webhook failed; Stripe will resend it');
      res.status(500).json({ error: 'internal error' });
    }
  });
  expressApp.use(
    '/graphql',
    express.json({ limit: MAX_BODY_BYTES }),
    expressMiddleware(apollo, {
      context: async ({ req, res }) => {
        const requestId = String(res.locals.requestId);
        const principal = await toGraphQL(() => authenticate(app, req));
        await toGraphQL(() => consumeRequestTokens(app, principal, req.ip ?? 'unknown'));
        // Aborted if the client goes away before its answer (a predict(wait:) it no longer waits for).
        const gone = new AbortController();
        res.once('close', () => {
          if (!res.writableFinished) gone.abort();
        });
        return {
          requestId, principal, services: app.services, log: log.child({ requestId }), origin: `${req.protocol}://${req.get('host')}`, signal: gone.signal,
        };
      },
    }),
  );

  // Errors before GraphQL (a body that is not JSON, or too large) answer as GraphQL errors, never
  // as Express's HTML page (which shows a stack trace outside production).
  expressApp.use((err: Error & { type?: string; status?: number }, _req: Request, res: Response, next: NextFunction) => {
    if (res.headersSent) return next(err);
    if (err.type === 'entity.parse.failed' || err.type === 'entity.too.large' || err.type === 'encoding.unsupported' || err.type === 'charset.unsupported') {
      const message = err.type === 'entity.too.large' ? `The request body exceeds ${MAX_BODY_BYTES / 1024 / 1024} MB` : 'The request body is not valid JSON';
      return void res.status(err.status ?? 400).json({ errors: [{ message, extensions: { code: ErrorCode.BAD_USER_INPUT } }] });
    }
    log.error({ err }, 'unhandled error in HTTP request');
    res.status(500).json({ errors: [{ message: 'Internal server error', extensions: { code: ErrorCode.INTERNAL } }] });
  });

  const port = opts.port ?? env.PORT;
  await new Promise<void>((resolve) => httpServer.listen(port, opts.host ?? env.HOST, resolve));
  const actual = (httpServer.address() as AddressInfo).port;
  return {
    url: `http://127.0.0.1:${actual}/graphql`,
    port: actual,
    httpServer,
    schema,
    async close() {
      await apollo.stop();
    },
  };
}

async function authenticate(app: App, req: Request): Promise<Principal | null> {
  const header = req.header('authorization');
  if (!header) return null;
  const m = /^Bearer\s+(\S+)$/i.exec(header);
  if (!m) throw unauthenticated('Authorization header must be "Bearer <token>"');
  return app.services.tenancy.authenticate(m[1]);
}

/** Errors thrown while building the context must be GraphQLErrors with an HTTP status, or Apollo answers 500. */
async function toGraphQL<T>(fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    // Postgres or Redis down while authenticating or rate limiting: fail closed, and say so.
    const e = err instanceof AppError ? err : isBackendUnavailable(err) ? serviceUnavailable() : null;
    if (e) {
      // Before any resolver ran: an unauthenticated request is a 401 too, any other refusal a 400 unless its code sets one.
      const status = e.code === ErrorCode.UNAUTHENTICATED ? 401 : httpStatusOf(e.code) ?? 400;
      throw new GraphQLError(e.message, { extensions: { ...e.extensions, code: e.code, http: { status } } });
    }
    throw err;
  }
}
