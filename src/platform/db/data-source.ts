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
    ...(opts.sessionSettings
      ? { extra: { options: Object.entries(opts.sessionSettings).map(([k, v]) => `-c ${k}=${v}`).join(' ') } }
      : {}),
  });
}

/** For the TypeORM CLI (`npx typeorm migration:show -d dist/src/platform/db/data-source.js`). */
export const dataSource = createDataSource({ url: process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/nimbus' });
