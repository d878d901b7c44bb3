import { randomBytes } from 'node:crypto';
import { loadEnv, type Env } from '../../src/config/env';

export const TEST_DATABASE_URL = process.env.TEST_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/nimbus_test';

/** Each test file gets its own Redis prefix, so files can run in parallel and repeat. */
export function testEnv(overrides: Record<string, string> = {}): Env {
  return loadEnv({
    NODE_ENV: 'test',
    DATABASE_URL: TEST_DATABASE_URL,
    REDIS_URL: process.env.REDIS_URL ?? 'redis://127.0.0.1:6379',
    REDIS_PREFIX: `nimbus-test-${randomBytes(4).toString('hex')}`,
    LOG_LEVEL: 'silent',
    SEED_DEMO: 'false',
    ...overrides,
  });
}
