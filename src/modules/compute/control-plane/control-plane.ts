import { Redis } from 'ioredis';
import type { Logger } from 'pino';
import { createDataSource } from '../../../platform/db/data-source';
import type { Metrics } from '../../../platform/http/metrics';
import { keys } from '../../../platform/queue/messages';
import type { Env } from '../../../config/env';
import { ComputeMetrics } from '../compute.metrics';
import type { JobUpdateBus } from '../job-updates';
import { ANNOUNCE_COLUMNS, Announcer } from './announcer';
import { DEFAULT_SETTINGS, HotPool, type ControlPlaneContext, type ControlPlaneSettings } from './context';
import { NodeMonitor } from './node-monitor';
import { Reconciler } from './reconciler';
import { Recorder } from './recorder';
import { Scheduler } from './scheduler';
import { WebhookSender } from './webhooks';
import { startBillingWorker, type BillingWorker } from '../../billing/billing-worker';
import { createArtifactStore } from '../../training/artifact-store';

export interface ControlPlane {
  cx: ControlPlaneContext;
  announcer: Announcer;
  scheduler: Scheduler;
  recorder: Recorder;
  monitor: NodeMonitor;
  reconciler: Reconciler;
  /** Meter reporting to Stripe and spend-limit checks. */
  billing: BillingWorker;
  stop(): Promise<void>;
}

/**
 * The control plane: admitter, completion recorder, node monitor, reconciler and webhook sender.
 * It connects as the database owner (it works across tenants and holds no request context);
 * node agents never touch the database.
 */
export async function startControlPlane(
  env: Env, opts: {
    log: Logger; metrics: Metrics; settings?: Partial<ControlPlaneSettings>;
    /** The job-update bus of an API in this process: its waiters are answered directly (Announcer). */
    localBus?: JobUpdateBus;
  },
): Promise<ControlPlane> {
  const db = createDataSource({ url: env.DATABASE_URL, poolSize: 5, applicationName: 'nimbus-control-plane' });
  const relaxedPool = new HotPool(env.DATABASE_URL, 'relaxed', opts.log);
  const durablePool = new HotPool(env.DATABASE_URL, 'durable', opts.log);
  await db.initialize();
  const connections: Redis[] = [];
  const connect = (name: string, opts: { autoPipelining?: boolean } = {}) => {
    const r = new Redis(env.REDIS_URL, {
      maxRetriesPerRequest: null, enableAutoPipelining: opts.autoPipelining ?? false, connectionName: `${env.REDIS_PREFIX}:cp:${name}`,
    });
    r.on('error', () => undefined); // reconnects on its own; failures surface in the loops that use it
    connections.push(r);
    return r;
  };
  const cx: ControlPlaneContext = {
    db, relaxedPool, durablePool, redis: connect('main', { autoPipelining: true }), connect, keys: keys(env.REDIS_PREFIX), prefix: env.REDIS_PREFIX, log: opts.log,
    metrics: new ComputeMetrics(opts.metrics.registry),
    settings: {
      ...DEFAULT_SETTINGS,
      webhookAllowPrivate: env.NODE_ENV !== 'production',
      ...opts.settings,
    },
  };
  const webhooks = new WebhookSender(cx);
  const announcer = new Announcer(cx, webhooks, opts.localBus);
  const scheduler = new Scheduler(cx);
  const monitor = new NodeMonitor(cx, scheduler, announcer);
  const recorder = new Recorder(cx, scheduler, announcer);
  // Retention deletes jobs' stored input images with their inputs.
  const reconciler = new Reconciler(cx, scheduler, monitor, announcer, createArtifactStore(env));
  scheduler.onCanceled = async (jobId) => {
    const [row] = await db.query(`SELECT ${ANNOUNCE_COLUMNS} FROM jobs WHERE id = $1`, [jobId]);
    if (row) await announcer.announce(row);
  };
  webhooks.start();
  const nodes = await monitor.start();
  await scheduler.start(nodes);
  await recorder.start();
  reconciler.start();
  const billing = await startBillingWorker(cx, env, { registry: opts.metrics.registry });
  return {
    cx, announcer, scheduler, recorder, monitor, reconciler, billing,
    async stop() {
      await billing.stop();
      reconciler.stop();
      monitor.stop();
      await recorder.stop();
      await scheduler.stop();
      await webhooks.stop();
      // Not those the loops above have closed already: ioredis arms a 2 s timer on every
      // disconnect() and clears it when the stream closes, which an ended one never does again.
      for (const c of connections) if (c.status !== 'end') c.disconnect();
      await Promise.all([db.destroy(), relaxedPool.end(), durablePool.end()]);
    },
  };
}
