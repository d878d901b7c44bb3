import { Redis } from 'ioredis';
import type { Logger } from 'pino';
import { allowsPlainHttpWebhooks, appDatabaseUrl, jwtKeys, operatorEmails, type Env } from './config/env';
import { createDataSource } from './platform/db/data-source';
import { Database } from './platform/db/database';
import { Metrics } from './platform/http/metrics';
import { createLogger } from './platform/logger';
import { RateLimiter } from './platform/rate-limit';
import { TokenSigner } from './modules/tenancy/credentials';
import { TenancyService } from './modules/tenancy/tenancy.service';
import { PLAN_LIMITS } from './modules/tenancy/plans';
import { WebhookSettingsService } from './modules/tenancy/webhook-settings';
import { WebhookDeliveriesService } from './modules/compute/webhook-deliveries';
import { JobUpdateBus } from './modules/compute/job-updates';
import { JobsService } from './modules/compute/jobs.service';
import { OperatorService } from './modules/compute/operator.service';
import { ServicesService } from './modules/services/services.service';
import { ImageInputStore } from './modules/services/image-store';
import { createArtifactStore } from './modules/training/artifact-store';
import { createBilling, type BillingService } from './modules/billing';
import { keys } from './platform/queue/messages';
import { createTraining, type TrainingServices } from './modules/training';

export interface AppServices extends TrainingServices {
  tenancy: TenancyService;
  jobs: JobsService;
  services: ServicesService;
  operator: OperatorService;
  billing: BillingService;
  webhookSettings: WebhookSettingsService;
  webhookDeliveries: WebhookDeliveriesService;
}

/** The wired application: repositories and clients first, then services. Used by the API, workers and tests. */
export interface App {
  env: Env;
  log: Logger;
  db: Database;
  redis: Redis;
  bus: JobUpdateBus;
  rateLimiter: RateLimiter;
  metrics: Metrics;
  services: AppServices;
  close(): Promise<void>;
}

export async function createApp(env: Env, opts: { log?: Logger; metrics?: Metrics } = {}): Promise<App> {
  const log = opts.log ?? createLogger(env.LOG_LEVEL);
  const dataSource = createDataSource({
    url: appDatabaseUrl(env), poolSize: env.DB_POOL_SIZE, applicationName: 'nimbus-api',
    queryTimeoutMs: env.DB_QUERY_TIMEOUT_MS, connectTimeoutMs: env.DB_CONNECT_TIMEOUT_MS,
  });
  await dataSource.initialize();
  const db = new Database(dataSource);
  // Auto-pipelining: commands issued in the same tick share one write (rate limits, wake-ups, reads).
  const redis = new Redis(env.REDIS_URL, { maxRetriesPerRequest: 3, enableAutoPipelining: true, connectionName: `${env.REDIS_PREFIX}:api` });
  const subscriber = new Redis(env.REDIS_URL, { maxRetriesPerRequest: null, connectionName: `${env.REDIS_PREFIX}:api-sub` });
  const k = keys(env.REDIS_PREFIX);
  const bus = new JobUpdateBus(subscriber, k.jobUpdates);
  await bus.start();
  const metrics = opts.metrics ?? new Metrics();
  const tenancy = new TenancyService(
    db, new TokenSigner(jwtKeys(env), env.JWT_KEY_ID, env.JWT_TTL_SECONDS), operatorEmails(env),
  );
  const billing = createBilling(env, db, tenancy, log);
  // One artifact store for the process: vision inputs' image bytes and the training module's files.
  const store = createArtifactStore(env);
  const services = new ServicesService(billing.prices, {}, new ImageInputStore(store, log));
  // A deployment is resolved by the training module's registry, a service id by the catalog.
  const webhookPolicy = { allowPlainHttpWebhooks: allowsPlainHttpWebhooks(env) };
  const jobs = new JobsService(db, redis, k, bus, (p, ref, input) =>
    (ref.deployment !== undefined ? training.models.resolveDeployment(p, ref.deployment, input) : services.resolve(p, ref, input)), {
    ...webhookPolicy,
    heldWaitsLimit: async (tenantId) => PLAN_LIMITS[(await tenancy.tenantProfile(tenantId)).plan].heldWaits,
  });
  jobs.guards.push(billing.guard);
  const training = createTraining(env, db, redis, k, log, jobs, store);
  const webhookDeliveries = new WebhookDeliveriesService(db, redis, env.REDIS_PREFIX);
  return {
    env, log, db, redis, metrics, bus,
    rateLimiter: new RateLimiter(redis, env.REDIS_PREFIX),
    services: { tenancy, jobs, services, operator: new OperatorService(db, redis, k), billing: billing.service,
      webhookSettings: new WebhookSettingsService(db, webhookPolicy), webhookDeliveries, ...training },
    async close() {
      await webhookDeliveries.close().catch(() => undefined);
      redis.disconnect();
      subscriber.disconnect();
      await dataSource.destroy();
    },
  };
}
