import { Redis } from 'ioredis';
import type { Logger } from 'pino';
import { appDatabaseUrl, jwtKeys, operatorEmails, type Env } from './config/env';
import { createDataSource } from './platform/db/data-source';
import { Database } from './platform/db/database';
import { Metrics } from './platform/http/metrics';
import { createLogger } from './platform/logger';
import { RateLimiter } from './platform/rate-limit';
import { TokenSigner } from './modules/tenancy/credentials';
import { TenancyService } from './modules/tenancy/tenancy.service';

export interface AppServices {
  tenancy: TenancyService;
}

/** The wired application: repositories and clients first, then services. Used by the API, workers and tests. */
export interface App {
  env: Env;
  log: Logger;
  db: Database;
  redis: Redis;
  rateLimiter: RateLimiter;
  metrics: Metrics;
  services: AppServices;
  close(): Promise<void>;
}

export async function createApp(env: Env, opts: { log?: Logger; metrics?: Metrics } = {}): Promise<App> {
  const log = opts.log ?? createLogger(env.LOG_LEVEL);
  const dataSource = createDataSource({ url: appDatabaseUrl(env), poolSize: env.DB_POOL_SIZE, applicationName: 'nimbus-api' });
  await dataSource.initialize();
  const db = new Database(dataSource);
  const redis = new Redis(env.REDIS_URL, { maxRetriesPerRequest: 3, lazyConnect: false });
  const metrics = opts.metrics ?? new Metrics();
  const tenancy = new TenancyService(
    db, new TokenSigner(jwtKeys(env), env.JWT_KEY_ID, env.JWT_TTL_SECONDS), operatorEmails(env),
  );
  return {
    env, log, db, redis, metrics,
    rateLimiter: new RateLimiter(redis, env.REDIS_PREFIX),
    services: { tenancy },
    async close() {
      redis.disconnect();
      await dataSource.destroy();
    },
  };
}
