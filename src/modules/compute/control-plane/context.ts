import type { ChainableCommander, Redis } from 'ioredis';
import type { Logger } from 'pino';
import { Pool } from 'pg';
import type { DataSource } from 'typeorm';
import { run, type Statement } from '../../../platform/db/sql';
import { STOPPED_MARKER_SECONDS, type keys } from '../../../platform/queue/messages';
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
  relaxedPool: HotPool;
  durablePool: HotPool;
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
  /** Attempts per webhook event, the first included (8: the first and seven retries over ~28 h). */
  webhookMaxAttempts: number;
  /** Inputs and outputs are deleted this long after a job ends (metadata is kept). */
  dataRetentionSeconds: number;
  /** The unit of the webhook retry schedule (webhooks.ts): 1 s gives waits of 5 s, 5 min, 30 min, … 10 h. */
  webhookBackoffMs: number;
  /** One webhook attempt, from connecting to the response's status, at most (then it counts as failed). */
  webhookTimeoutMs: number;
  /**
   * Webhook attempts in flight at once, shared by all tenants (each is one outgoing HTTP request):
   * a tenant whose receiver hangs holds a slot per attempt for up to `webhookTimeoutMs`.
   */
  webhookConcurrency: number;
  /** Node events another recorder took and never acknowledged (it crashed) are recorded after this long. */
  abandonedEventsAfterMs: number;
  /**
   * The webhook sweep: every `webhookSweepIntervalMs`, jobs that ended at least `webhookSweepLagMs`
   * ago with a webhook URL but no delivery attempt of their terminal event get it enqueued (its
   * announcement was lost). After a start it looks back `webhookSweepLookbackMs`.
   */
  webhookSweepIntervalMs: number;
  webhookSweepLagMs: number;
  webhookSweepLookbackMs: number;
  /** Webhook delivery attempts (`webhookDeliveries`) are deleted this long after they were made. */
  webhookDeliveryRetentionSeconds: number;
  /** How often the admitter's quotas are compared with Postgres (a lost quota message is applied then). */
  quotaCheckIntervalMs: number;
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
  webhookTimeoutMs: 10_000,
  webhookConcurrency: 32,
  abandonedEventsAfterMs: 10_000,
  webhookSweepIntervalMs: 30_000,
  webhookSweepLagMs: 30_000,
  webhookSweepLookbackMs: 3600_000,
  webhookDeliveryRetentionSeconds: 30 * 24 * 3600,
  quotaCheckIntervalMs: 10_000,
};

/**
 * Queues on `pipe` what stops an attempt on its node: a cancel message for at once, and the
 * attempt's stopped marker, which the node reads before it starts an attempt and with each
 * heartbeat, in case the message is lost.
 */
export function stopAttempt(pipe: ChainableCommander, k: ControlPlaneContext['keys'], jobId: string, attempt: number, reason: string): ChainableCommander {
  return pipe.set(k.stopped(jobId, attempt), reason, 'EX', STOPPED_MARKER_SECONDS)
    .publish(k.cancel, JSON.stringify({ jobId, attempt, reason }));
}

/** Runs one recoverable prepared statement on the relaxed pool (see `ControlPlaneContext.relaxedPool`). */
export function relaxedRun<T extends Record<string, any> = any>(cx: Pick<ControlPlaneContext, 'relaxedPool'>, st: Statement, params: unknown[]): Promise<T[]> {
  return cx.relaxedPool.run<T>(st, params);
}

/** Runs one durable prepared statement (autocommit: one statement, one transaction, flushed). */
export function durableRun<T extends Record<string, any> = any>(cx: Pick<ControlPlaneContext, 'durablePool'>, st: Statement, params: unknown[]): Promise<T[]> {
  return cx.durablePool.run<T>(st, params);
}

/**
 * One of the control plane's hot pools (`ControlPlaneContext.relaxedPool` / `durablePool`): owner
 * role, generic plans, no sequential scans while an index applies, and plans that follow the size
 * of the tables they were made for.
 *
 * A generic plan is made once per connection, from the table sizes of that moment, and kept until
 * the tables' statistics change (an ANALYZE, usually autovacuum's, invalidates it): made while
 * `jobs` was empty or tiny (a new deployment), the cheapest plan walks the whole table, or the whole
 * primary key, and probes the statement's array for each row, and it keeps doing that as the table
 * grows until autovacuum next analyzes it: a minute at best, longer under load, after the whole of a
 * new deployment's first burst (seen: 3 ms of Postgres CPU per job at 2,000 rows, 1.5 ms with
 * sequential scans off, in the dispatch bench on a fresh database). So the pool
 * watches the size of `jobs` and `usage_ledger` (at most once per `checkEveryMs`, beside the
 * statements, never in front of them) and, when they have doubled since the plans in use were made
 * (and by at least `minGrowthPages`), moves to a new generation of statement names: each
 * connection then prepares, and plans, every statement again on its next use. From empty to a
 * billion rows that is about 25 re-plans per statement and connection, each well under a millisecond,
 * and a plan in use was made on tables at least half their present size (past the first few pages,
 * and within a second).
 */
export class HotPool {
  readonly pool: Pool;
  private generation = 0;
  /** Size (pages of jobs + usage_ledger) when this generation's plans were made; null until first measured. */
  private plannedAtPages: number | null = null;
  private nextCheckAt = 0;
  private checking = false;

  constructor(url: string, kind: 'relaxed' | 'durable', log: Pick<Logger, 'warn'>, private readonly opts = { checkEveryMs: 1000, minGrowthPages: 8, connections: 2 }) {
    const settings: Record<string, string> = {
      plan_cache_mode: 'force_generic_plan', enable_seqscan: 'off', ...(kind === 'relaxed' ? { synchronous_commit: 'off' } : {}),
    };
    this.pool = new Pool({
      connectionString: url, max: opts.connections, application_name: `nimbus-control-plane-${kind}`,
      options: Object.entries(settings).map(([k, v]) => `-c ${k}=${v}`).join(' '),
    });
    this.pool.on('error', (err) => log.warn({ err: err.message }, `${kind} pool connection failed`));
  }

  /** The name a statement is prepared under in the current generation of plans. */
  nameOf(st: Statement): string {
    return this.generation === 0 ? st.name : `${st.name}#${this.generation}`;
  }

  run<T extends Record<string, any> = any>(st: Statement, params: unknown[]): Promise<T[]> {
    if (Date.now() >= this.nextCheckAt) void this.checkGrowth();
    return run<T>(this.pool, { name: this.nameOf(st), text: st.text }, params);
  }

  /** Measures the tables; moves to a new generation of plans if they have doubled since. Exposed for tests. */
  async checkGrowth(): Promise<void> {
    if (this.checking) return;
    this.checking = true;
    this.nextCheckAt = Date.now() + this.opts.checkEveryMs;
    try {
      const { rows: [{ pages }] } = await this.pool.query<{ pages: string }>(
        `SELECT (pg_relation_size('jobs') + pg_relation_size('usage_ledger')) / current_setting('block_size')::int AS pages`,
      );
      const now = Number(pages);
      if (this.plannedAtPages === null) this.plannedAtPages = now;
      else if (now >= 2 * this.plannedAtPages && now - this.plannedAtPages >= this.opts.minGrowthPages) {
        this.generation++;
        this.plannedAtPages = now;
      }
    } catch {
      // Measured again at the next check; the plans in use stay meanwhile.
    } finally {
      this.checking = false;
    }
  }

  end(): Promise<void> {
    return this.pool.end();
  }
}
