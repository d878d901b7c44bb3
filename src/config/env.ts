import { z } from 'zod';

export const DEV_JWT_SECRET = 'nimbus-development-secret-change-me-0123456789';

const bool = z
  .enum(['true', 'false', '1', '0'])
  .transform((v) => v === 'true' || v === '1');

/** Every environment variable Nimbus reads, with the defaults that work on a developer machine. */
const schema = z.object({
    NODE_ENV: z.enum(['development', 'test', 'production']).default('development'),
    PORT: z.coerce.number().int().min(0).max(65535).default(4000),
    /** `npm run control-plane` serves /metrics and /healthz here (the API serves them on PORT; `npm start` has both there). */
    METRICS_PORT: z.coerce.number().int().min(0).max(65535).default(9464),
    HOST: z.string().default('0.0.0.0'),
    /**
     * Bearer token for /metrics (API and control plane): its labels carry tenant ids and queue
     * depths. Required when NODE_ENV=production; unset elsewhere, /metrics is open.
     */
    METRICS_TOKEN: z.string().min(16).optional(),
    PUBLIC_URL: z.url().optional(),
    DATABASE_URL: z.url().default('postgres://postgres@127.0.0.1:5432/nimbus'),
    /** The non-owner role the API connects as, so row-level security applies. Created at start-up. */
    APP_DB_USER: z.string().regex(/^[a-z_][a-z0-9_]*$/, 'must be a plain lower-case role name').default('nimbus_app'),
    APP_DB_PASSWORD: z.string().min(8).default('nimbus_app_dev_pw'),
    DB_POOL_SIZE: z.coerce.number().int().min(1).max(200).default(10),
    /** The API gives up on a query unanswered this long (a hung database): SERVICE_UNAVAILABLE. */
    DB_QUERY_TIMEOUT_MS: z.coerce.number().int().min(100).default(15_000),
    /** ... and on opening a connection after this long. */
    DB_CONNECT_TIMEOUT_MS: z.coerce.number().int().min(100).default(5_000),
    REDIS_URL: z.url().default('redis://127.0.0.1:6379'),
    /** Key prefix for every Redis key (queues, rate limits), so several deployments or test runs share a Redis. */
    REDIS_PREFIX: z.string().min(1).default('nimbus'),
    JWT_SECRET: z.string().min(32, 'must be at least 32 characters').default(DEV_JWT_SECRET),
    JWT_KEY_ID: z.string().min(1).default('k1'),
    /** Older signing keys still accepted for verification while tokens issued with them expire: "kid:secret,kid:secret". */
    JWT_PREVIOUS_KEYS: z.string().default(''),
    JWT_TTL_SECONDS: z.coerce.number().int().min(60).default(12 * 3600),
    LOG_LEVEL: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
    QUERY_COST_LIMIT: z.coerce.number().int().min(1).default(1000),
    QUERY_DEPTH_LIMIT: z.coerce.number().int().min(2).default(12),
    /** How often open WebSocket connections' credentials are checked again (revoked keys, expired tokens). */
    WS_CREDENTIAL_RECHECK_MS: z.coerce.number().int().min(100).default(5000),
    /** Comma-separated e-mails that are platform operators (see README "Operators"). */
    OPERATOR_EMAILS: z.string().default(''),
    STRIPE_SECRET_KEY: z.string().startsWith('sk_').optional(),
    STRIPE_WEBHOOK_SECRET: z.string().optional(),
    /** Point the Stripe SDK at another server (the fake Stripe in tests, stripe-mock in compose): http://host:port */
    STRIPE_API_BASE: z.url().optional(),
    /** Meter events sent per second at most (Stripe's live limit for meter events is 1,000/s). */
    STRIPE_METER_EVENTS_PER_SECOND: z.coerce.number().int().min(1).max(10_000).default(100),
    /** How long a PAST_DUE tenant may still start jobs before PAYMENT_REQUIRED (default 3 days). */
    BILLING_GRACE_SECONDS: z.coerce.number().int().min(0).default(3 * 24 * 3600),
    DATA_DIR: z.string().default('.data'),
    /** Artifact store (datasets, models, checkpoints): `local` (files under DATA_DIR/artifacts) or `s3` (S3/MinIO). */
    ARTIFACT_STORE: z.enum(['local', 's3']).default('local'),
    S3_ENDPOINT: z.url().optional(),
    S3_REGION: z.string().default('us-east-1'),
    S3_BUCKET: z.string().optional(),
    S3_ACCESS_KEY_ID: z.string().optional(),
    S3_SECRET_ACCESS_KEY: z.string().optional(),
    /** Path-style bucket URLs (MinIO needs them). */
    S3_FORCE_PATH_STYLE: bool.default(true),
    /** Largest dataset file a signed upload URL accepts. */
    UPLOAD_MAX_BYTES: z.coerce.number().int().min(1).default(100 * 1024 * 1024),
    SEED_DEMO: bool.default(true),
  });

export type Env = z.infer<typeof schema>;

/** Webhook URLs may be plain http outside production (local receivers); production requires https. */
export const allowsPlainHttpWebhooks = (env: Pick<Env, 'NODE_ENV'>): boolean => env.NODE_ENV !== 'production';

/** Rules across variables, checked on the raw values so they are reported alongside type errors. */
function crossChecks(raw: Record<string, string | undefined>): string[] {
  const problems: string[] = [];
  if (raw.NODE_ENV === 'production' && (raw.JWT_SECRET ?? DEV_JWT_SECRET) === DEV_JWT_SECRET) {
    problems.push('JWT_SECRET: the development default is refused when NODE_ENV=production; set a secret of your own');
  }
  for (const pair of (raw.JWT_PREVIOUS_KEYS ?? '').split(',').filter(Boolean)) {
    if (!/^[^:]+:.{32,}$/.test(pair)) problems.push('JWT_PREVIOUS_KEYS: each entry must be kid:secret with a secret of at least 32 characters');
  }
  if (raw.NODE_ENV === 'production' && !raw.METRICS_TOKEN) {
    problems.push('METRICS_TOKEN: required when NODE_ENV=production (/metrics labels carry tenant ids); Prometheus sends it as a bearer token');
  }
  if (raw.ARTIFACT_STORE === 's3' && !raw.S3_BUCKET) problems.push('S3_BUCKET: required when ARTIFACT_STORE=s3');
  return problems;
}

export class ConfigError extends Error {
  constructor(readonly problems: string[]) {
    super(`Invalid configuration:\n${problems.map((p) => `  - ${p}`).join('\n')}`);
    this.name = 'ConfigError';
  }
}

/** Validates the environment once; the message names every bad or missing variable. */
export function loadEnv(source: NodeJS.ProcessEnv = process.env): Env {
  // Empty strings mean "unset" (docker-compose passes `FOO=` for unset variables).
  const cleaned = Object.fromEntries(Object.entries(source).filter(([, v]) => v !== undefined && v !== ''));
  const parsed = schema.safeParse(cleaned);
  const problems = [
    ...(parsed.success ? [] : parsed.error.issues.map((i) => `${i.path.join('.') || '(env)'}: ${i.message}`)),
    ...crossChecks(cleaned),
  ];
  if (problems.length || !parsed.success) throw new ConfigError(problems);
  return parsed.data;
}

/** The URL the API's non-owner role connects with: DATABASE_URL with the user and password replaced. */
export function appDatabaseUrl(env: Env): string {
  const url = new URL(env.DATABASE_URL);
  url.username = env.APP_DB_USER;
  url.password = env.APP_DB_PASSWORD;
  return url.toString();
}

export function jwtKeys(env: Env): Map<string, string> {
  const keys = new Map<string, string>([[env.JWT_KEY_ID, env.JWT_SECRET]]);
  for (const pair of env.JWT_PREVIOUS_KEYS.split(',').filter(Boolean)) {
    const i = pair.indexOf(':');
    keys.set(pair.slice(0, i), pair.slice(i + 1));
  }
  return keys;
}

export const operatorEmails = (env: Env) =>
  new Set(env.OPERATOR_EMAILS.split(',').map((e) => e.trim().toLowerCase()).filter(Boolean));
