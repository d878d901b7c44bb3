import 'reflect-metadata';
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { Client } from 'pg';
import { loadEnv } from '../src/config/env';
import { prepareDatabase } from '../src/platform/db/prepare';
import { TEMPLATE_DATABASE_URL, TEST_DB_PREFIX } from './support/env';

/**
 * Runs once before the suite: compiles dist/ (node agents and worker threads run as real processes
 * from compiled JS), migrates the template database each test file copies, and drops the copies
 * earlier runs left behind.
 */
export default async function globalSetup(): Promise<void> {
  const root = join(__dirname, '..');
  execFileSync(process.execPath, [join(root, 'node_modules/@swc/cli/bin/swc.js'),
    'src', 'workers', 'migrations', 'bench', '-d', 'dist', '--copy-files', '-q'],
  { cwd: root, stdio: 'inherit' });
  await prepareDatabase(loadEnv({ DATABASE_URL: TEMPLATE_DATABASE_URL, LOG_LEVEL: 'silent' }));
  const admin = new URL(TEMPLATE_DATABASE_URL);
  admin.pathname = '/postgres';
  const c = new Client({ connectionString: admin.toString() });
  await c.connect();
  try {
    const { rows } = await c.query(`SELECT datname FROM pg_database WHERE starts_with(datname, $1)`, [TEST_DB_PREFIX]);
    const cutoff = Date.now() / 1000 - 3600;
    for (const r of rows) {
      const created = Number(/^(\d+)_/.exec(r.datname.slice(TEST_DB_PREFIX.length))?.[1] ?? 0);
      if (created < cutoff) await c.query(`DROP DATABASE IF EXISTS ${r.datname} WITH (FORCE)`);
    }
  } finally {
    await c.end();
  }
}
