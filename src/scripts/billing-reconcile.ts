import 'reflect-metadata';
import { parseArgs } from 'node:util';
import { loadEnvOrExit } from '../bootstrap';
import { createDataSource } from '../platform/db/data-source';
import { PriceBook } from '../modules/billing/price-book';
import { formatReconcile, parsePeriod, reconcile } from '../modules/billing/reconcile';
import { periodOf } from '../modules/billing/spend';
import { StripeCatalog } from '../modules/billing/stripe-setup';
import { createStripeClient, stripeSettings } from '../modules/billing/stripe-gateway';

/**
 * `npm run billing:reconcile -- --period 2026-11`: per tenant × meter, the ledger's billable
 * device-ms in the month against Stripe's meter event summaries for the customer. Prints a table
 * and the differences; exits 1 if there is any.
 */
async function main() {
  const { values } = parseArgs({ options: { period: { type: 'string' } } });
  const period = values.period ?? periodOf(new Date()).key;
  const { start, end } = parsePeriod(period);
  const env = loadEnvOrExit();
  const settings = stripeSettings(env);
  if (!settings) {
    console.error('No Stripe configured: set STRIPE_SECRET_KEY (and STRIPE_API_BASE for a local server).');
    process.exit(2);
  }
  const db = createDataSource({ url: env.DATABASE_URL, poolSize: 2, applicationName: 'nimbus-reconcile' });
  await db.initialize();
  try {
    const query = db.query.bind(db);
    const stripe = createStripeClient(settings);
    const rows = await reconcile({ query, stripe, catalog: new StripeCatalog(stripe, query, new PriceBook(query)), start, end });
    console.log(formatReconcile(rows, period));
    process.exitCode = rows.some((r) => r.diffMs !== 0n) ? 1 : 0;
  } finally {
    await db.destroy();
  }
}

main().catch((err) => {
  console.error(err instanceof Error ? err.message : err);
  process.exit(2);
});
