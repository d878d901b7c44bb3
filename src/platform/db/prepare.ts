import { Client } from 'pg';
import type { Env } from '../../config/env';
import { createDataSource } from './data-source';

/**
 * Everything the database needs before the API starts, so that no hand step exists:
 * create the database if missing, run pending migrations as the owner, and create/refresh the
 * non-owner role the API connects as (RLS applies to it) with exactly the grants it needs.
 */
export async function prepareDatabase(env: Env, log: (msg: string) => void = () => {}): Promise<void> {
  await ensureDatabase(env.DATABASE_URL, log);
  const owner = createDataSource({ url: env.DATABASE_URL, poolSize: 2, applicationName: 'nimbus-migrate' });
  await owner.initialize();
  try {
    // Serialise concurrent starters (API, control plane, parallel test workers) on one advisory lock.
    await owner.query('SELECT pg_advisory_lock(7242024)');
    try {
      const ran = await owner.runMigrations({ transaction: 'each' });
      if (ran.length) log(`applied migrations: ${ran.map((m) => m.name).join(', ')}`);
      await ensureAppRole(owner.query.bind(owner), env.APP_DB_USER, env.APP_DB_PASSWORD);
    } finally {
      await owner.query('SELECT pg_advisory_unlock(7242024)');
    }
  } finally {
    await owner.destroy();
  }
}

async function ensureDatabase(url: string, log: (msg: string) => void): Promise<void> {
  const target = new URL(url);
  const name = decodeURIComponent(target.pathname.slice(1));
  const admin = new URL(url);
  admin.pathname = '/postgres';
  const client = new Client({ connectionString: admin.toString() });
  await client.connect();
  try {
    const { rowCount } = await client.query('SELECT 1 FROM pg_database WHERE datname = $1', [name]);
    if (!rowCount) {
      try {
        await client.query(`CREATE DATABASE "${name.replace(/"/g, '""')}"`);
        log(`created database ${name}`);
      } catch (err) {
        // Another process created it at the same moment.
        if ((err as { code?: string }).code !== '42P04') throw err;
      }
    }
  } finally {
    await client.end();
  }
}

type Query = (sql: string, params?: unknown[]) => Promise<unknown>;

async function ensureAppRole(query: Query, role: string, password: string): Promise<void> {
  const exists = (await query('SELECT 1 FROM pg_roles WHERE rolname = $1', [role])) as unknown[];
  const pw = password.replace(/'/g, "''");
  // Roles are cluster-wide; NOSUPERUSER NOBYPASSRLS keeps RLS in force for it.
  await query(
    exists.length
      ? `ALTER ROLE ${role} LOGIN NOSUPERUSER NOBYPASSRLS PASSWORD '${pw}'`
      : `CREATE ROLE ${role} LOGIN NOSUPERUSER NOBYPASSRLS PASSWORD '${pw}'`,
  ).catch((err: { code?: string }) => {
    if (err.code !== '42710') throw err; // created concurrently
  });
  await query(`GRANT USAGE ON SCHEMA public TO ${role}`);
  await query(`GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO ${role}`);
  await query(`REVOKE ALL ON TABLE migrations FROM ${role}`);
  await query(`GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO ${role}`);
}
