import { randomBytes } from 'node:crypto';
import { Client } from 'pg';
import { loadEnv, type Env } from '../../src/config/env';

/** The migrated template; tests never connect to it, so it can be copied at any time. */
export const TEMPLATE_DATABASE_URL = process.env.TEST_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/nimbus_test';
export const TEST_DB_PREFIX = 'nimbus_t_';

let fileDatabase: Promise<string> | null = null;

/**
 * Each test file gets its own database, copied from the migrated template (~0.1 s), and its own
 * Redis prefix: files run in parallel and repeat without seeing each other's tenants, nodes or jobs.
 */
export function testDatabaseUrl(): Promise<string> {
  fileDatabase ??= (async () => {
    const template = new URL(TEMPLATE_DATABASE_URL);
    // The creation time in the name lets later runs drop leftovers without touching a concurrent run's databases.
    const name = `${TEST_DB_PREFIX}${Math.floor(Date.now() / 1000)}_${randomBytes(4).toString('hex')}`;
    const admin = new URL(TEMPLATE_DATABASE_URL);
    admin.pathname = '/postgres';
    const c = new Client({ connectionString: admin.toString() });
    await c.connect();
    try {
      await c.query(`CREATE DATABASE ${name} TEMPLATE ${template.pathname.slice(1)}`);
    } finally {
      await c.end();
    }
    const url = new URL(TEMPLATE_DATABASE_URL);
    url.pathname = `/${name}`;
    return url.toString();
  })();
  return fileDatabase;
}

const filePrefix = `nimbus-test-${randomBytes(4).toString('hex')}`;

export async function testEnv(overrides: Record<string, string> = {}): Promise<Env> {
  return loadEnv({
    NODE_ENV: 'test',
    DATABASE_URL: await testDatabaseUrl(),
    REDIS_URL: process.env.REDIS_URL ?? 'redis://127.0.0.1:6379',
    REDIS_PREFIX: filePrefix,
    LOG_LEVEL: 'silent',
    SEED_DEMO: 'false',
    ...overrides,
  });
}

/** The environment node agents and other child processes of this test file run with. */
export async function childEnv(overrides: Record<string, string> = {}): Promise<NodeJS.ProcessEnv> {
  const env = await testEnv(overrides);
  return { ...process.env, NODE_ENV: 'test', DATABASE_URL: env.DATABASE_URL, REDIS_URL: env.REDIS_URL, REDIS_PREFIX: env.REDIS_PREFIX, LOG_LEVEL: 'warn', ...overrides };
}
