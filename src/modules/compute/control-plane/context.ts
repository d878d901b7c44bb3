import type { Redis } from 'ioredis';
import type { Logger } from 'pino';
import { Pool } from 'pg';
import type { DataSource } from 'typeorm';
import { run, type Statement } from '../../../platform/db/sql';
import type { keys } from '../../../platform/queue/messages';
import type { ComputeMetrics } from '../compute.metrics';

/** What the control plane's parts share: the owner connection (it works across tenants), Redis, keys. */
export interface ControlPlaneContext {
  db: DataSource;
  /**
   * The hot path's own small pools (node-postgres, owner role), whose sessions always use the
   * generic plan of a prepared statement: the job path's statements take arrays, for which
   * Postgres would otherwise plan each call anew (~0.5 ms for the end-of-attempt statement).
   * `relaxedPool` sessions also run with `synchronous_commit = off`: for single statements whose
   * loss in a Postgres crash reconciliation repairs (admission, RUNNING, progress); they commit
   * without waiting for the WAL flush. Never for ledger or billing writes (`durablePool`).
   */
  relaxedPool: Pool;
  durablePool: Pool;
  redis: Redis;
  /** Creates a dedicated connection (blocking reads, subscriptions, BullMQ). */
  connect(name: string): Redis;
  keys: ReturnType<typeof keys>;
  prefix: string;
  log: Logger;
  metrics: ComputeMetrics;
  settings: ControlPlaneSettings;
}

export interface ControlPlaneSettings {
  /** Quota of a tenant without a row for a hardware class (devices). */
  defaultQuota: { CPU: { guaranteed: number; limit: number }; GPU: { guaranteed: number; limit: number } };
  /** How often Postgres is reconciled with the in-memory admitter (catches lost wake-ups, deadlines). */
  reconcileIntervalMs: number;
  /** A dispatched attempt not started by then is dispatched again (its BullMQ message may be lost). */
  redispatchAfterMs: number;
  /** A RUNNING attempt its node no longer reports for this long is treated as lost. */
  orphanAfterMs: number;
  /** Webhooks to private/loopback addresses are refused unless this is set (tests, local development). */
  webhookAllowPrivate: boolean;
  webhookMaxAttempts: number;
  /** Inputs and outputs are deleted this long after a job ends (metadata is kept). */
  dataRetentionSeconds: number;
  webhookBackoffMs: number;
  /** Node events another recorder took and never acknowledged (it crashed) are recorded after this long. */
  abandonedEventsAfterMs: number;
}

export const DEFAULT_SETTINGS: ControlPlaneSettings = {
  defaultQuota: { CPU: { guaranteed: 2, limit: 64 }, GPU: { guaranteed: 0, limit: 8 } },
  reconcileIntervalMs: 1000,
  redispatchAfterMs: 5000,
  orphanAfterMs: 5000,
  webhookAllowPrivate: false,
  webhookMaxAttempts: 8,
  dataRetentionSeconds: 3600,
  webhookBackoffMs: 1000,
  abandonedEventsAfterMs: 10_000,
};

/** Runs one recoverable prepared statement on the relaxed pool (see `ControlPlaneContext.relaxedPool`). */
export function relaxedRun<T extends Record<string, any> = any>(cx: Pick<ControlPlaneContext, 'relaxedPool'>, st: Statement, params: unknown[]): Promise<T[]> {
  return run<T>(cx.relaxedPool, st, params);
}

/** Runs one durable prepared statement (autocommit: one statement, one transaction, flushed). */
export function durableRun<T extends Record<string, any> = any>(cx: Pick<ControlPlaneContext, 'durablePool'>, st: Statement, params: unknown[]): Promise<T[]> {
  return run<T>(cx.durablePool, st, params);
}

/**
 * One of the control plane's hot pools (`ControlPlaneContext.relaxedPool` / `durablePool`): owner
 * role, generic plans, and no sequential scans while an index applies. A generic plan is made once
 * per connection, from the statistics of that moment, and kept for the connection's life: made
 * while `jobs` was empty (a fresh deployment, a quiet night after a purge), it would scan the whole
 * table on every call once the table has grown (seen: 3 ms of Postgres CPU per job with 2,000 jobs
 * in the table). The hot statements all find their rows by key, so the index plan is never wrong.
 */
export function hotPool(url: string, kind: 'relaxed' | 'durable', log: Pick<Logger, 'warn'>): Pool {
  const settings: Record<string, string> = {
    plan_cache_mode: 'force_generic_plan', enable_seqscan: 'off', ...(kind === 'relaxed' ? { synchronous_commit: 'off' } : {}),
  };
  const pool = new Pool({
    connectionString: url, max: 2, application_name: `nimbus-control-plane-${kind}`,
    options: Object.entries(settings).map(([k, v]) => `-c ${k}=${v}`).join(' '),
  });
  pool.on('error', (err) => log.warn({ err: err.message }, `${kind} pool connection failed`));
  return pool;
}
