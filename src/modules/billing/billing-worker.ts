import type { Registry } from 'prom-client';
import type { Env } from '../../config/env';
import { BillingMetrics } from './billing.metrics';
import type { ControlPlaneContext } from '../compute/control-plane/context';
import { MeterReporter, type ReporterOptions } from './meter-reporter';
import { PriceBook } from './price-book';
import { SpendMonitor } from './spend-monitor';
import { StripeAccounts, StripeCatalog } from './stripe-setup';
import { createStripeClient, stripeSettings } from './stripe-gateway';

export interface BillingWorker {
  prices: PriceBook;
  spend: SpendMonitor;
  /** Null when no Stripe is configured (spend limits still apply). */
  reporter: MeterReporter | null;
  catalog: StripeCatalog | null;
  accounts: StripeAccounts | null;
  /** Another reporter on the same parts (tests and benchmarks start, kill and restart them). */
  newReporter(opts?: Partial<ReporterOptions>): MeterReporter;
  stop(): Promise<void>;
}

/**
 * Billing's part of the control plane: Stripe set-up at start (meters and prices), the meter
 * reporter loop, and spend-limit checks in that loop. Without Stripe only the spend checks run.
 */
export async function startBillingWorker(
  cx: ControlPlaneContext, env: Env, opts: { reporter?: Partial<ReporterOptions>; registry?: Registry } = {},
): Promise<BillingWorker> {
  const prices = new PriceBook(cx.db.query.bind(cx.db));
  const metrics = opts.registry ? new BillingMetrics(opts.registry, cx.db.query.bind(cx.db)) : undefined;
  const spend = new SpendMonitor(cx, prices, metrics);
  spend.start();
  const settings = stripeSettings(env);
  if (!settings) {
    cx.log.info('billing: no Stripe configured; meter reporting is off, spend limits still apply');
    const timer = setInterval(() => void spend.check().catch((err: Error) => cx.log.warn({ err: err.message }, 'spend checks failed')), 2000);
    return {
      prices, spend, reporter: null, catalog: null, accounts: null,
      newReporter: () => {
        throw new Error('billing: no Stripe configured');
      },
      async stop() {
        clearInterval(timer);
        await spend.stop();
      },
    };
  }
  const stripe = createStripeClient(settings);
  const catalog = new StripeCatalog(stripe, cx.db.query.bind(cx.db), prices, cx.log);
  const accounts = new StripeAccounts(stripe, catalog, (_tenantId, fn) => fn(cx.db.query.bind(cx.db)));
  // The same set-up as `npm run stripe:setup`; Stripe being down must not stop the control plane.
  await catalog.sync().catch((err: Error) => cx.log.warn({ err: err.message }, 'Stripe set-up failed; retried when reporting'));
  const newReporter = (o: Partial<ReporterOptions> = {}) => new MeterReporter(
    { db: cx.db, stripe, catalog, accounts, log: cx.log, afterPass: () => spend.check(), metrics },
    { eventsPerSecond: settings.meterEventsPerSecond, ...opts.reporter, ...o },
  );
  const reporter = newReporter();
  reporter.start();
  return {
    prices, spend, reporter, catalog, accounts, newReporter,
    async stop() {
      await reporter.stop();
      await spend.stop();
    },
  };
}
