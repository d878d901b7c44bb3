import 'reflect-metadata';
import { DataSource, type MixedList } from 'typeorm';
import { ENTITIES } from './entities';
import { MIGRATIONS } from '../../../migrations';

export interface DataSourceOptions {
  url: string;
  poolSize?: number;
  applicationName?: string;
  /** Postgres settings for every session of this pool (`-c name=value` startup options). */
  sessionSettings?: Record<string, string>;
  /**
   * Give up on a query after this long without an answer (node-postgres `query_timeout`, client
   * side: it also ends a wait on a hung or partitioned server, which `statement_timeout` cannot),
   * and on a connection attempt after `connectTimeoutMs`. The API sets both, so a database that
   * stops answering costs requests seconds and SERVICE_UNAVAILABLE, not a hang.
   */
  queryTimeoutMs?: number;
  connectTimeoutMs?: number;
}

/** One DataSource per role: the owner (migrations, control plane) or the API's non-owner role. */
export function createDataSource(opts: DataSourceOptions): DataSource {
  return new DataSource({
    type: 'postgres',
    url: opts.url,
    entities: ENTITIES as MixedList<Function>,
    migrations: MIGRATIONS,
    migrationsTableName: 'migrations',
    synchronize: false,
    logging: false,
    poolSize: opts.poolSize ?? 10,
    applicationName: opts.applicationName ?? 'nimbus',
    extra: {
      ...(opts.sessionSettings ? { options: Object.entries(opts.sessionSettings).map(([k, v]) => `-c ${k}=${v}`).join(' ') } : {}),
      ...(opts.queryTimeoutMs ? { query_timeout: opts.queryTimeoutMs } : {}),
      ...(opts.connectTimeoutMs ? { connectionTimeoutMillis: opts.connectTimeoutMs } : {}),
    },
  });
}

/** For the TypeORM CLI (`npx typeorm migration:show -d dist/src/platform/db/data-source.js`). */
export const dataSource = createDataSource({ url: process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/nimbus' });
