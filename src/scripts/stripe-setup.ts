import 'reflect-metadata';
import { loadEnvOrExit } from '../bootstrap';
import { createDataSource } from '../platform/db/data-source';
import { prepareDatabase } from '../platform/db/prepare';
import { MS_PER_MINUTE, PICO_DIGITS, formatDecimal, parseDecimal } from '../modules/billing/money';
import { PriceBook } from '../modules/billing/price-book';
import { StripeCatalog } from '../modules/billing/stripe-setup';
import { createStripeClient, stripeSettings } from '../modules/billing/stripe-gateway';

/**
 * `npm run stripe:setup`: creates or updates the platform's Stripe objects (a product, a Billing
 * Meter and a metered Price per job kind × hardware class) from the price book, idempotently, and
 * records their ids in `billing_meters`. The control plane runs the same set-up when it starts.
 */
async function main() {
  const env = loadEnvOrExit();
  const settings = stripeSettings(env);
  if (!settings) {
    console.error('No Stripe configured: set STRIPE_SECRET_KEY (a test key, sk_test_…), and STRIPE_API_BASE to use another server.');
    process.exit(2);
  }
  await prepareDatabase(env);
  const db = createDataSource({ url: env.DATABASE_URL, poolSize: 2, applicationName: 'nimbus-stripe-setup' });
  await db.initialize();
  try {
    const catalog = new StripeCatalog(createStripeClient(settings), db.query.bind(db), new PriceBook(db.query.bind(db)));
    const meters = await catalog.sync();
    console.log(`Stripe ${settings.apiBase ?? 'api.stripe.com'}: meters and prices in place`);
    for (const m of meters.values()) {
      const perMinute = formatDecimal(parseDecimal(m.unitAmountDecimal, PICO_DIGITS) * MS_PER_MINUTE, PICO_DIGITS);
      console.log(`  ${m.eventName.padEnd(26)} meter ${m.meterId}  price ${m.priceId}  ${m.unitAmountDecimal} ¢/device-ms = ${perMinute} ¢/device-minute`);
    }
  } finally {
    await db.destroy();
  }
}

main().catch((err) => {
  console.error(err instanceof Error ? err.message : err);
  process.exit(1);
});
