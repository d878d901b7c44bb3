import { parseArgs } from 'node:util';
import { startFakeStripe } from './server';

/**
 * Runs the fake Stripe on its own for local use:
 *   node dist/src/modules/billing/fake-stripe/main.js --port 12111 [--host 0.0.0.0] [--webhook-url URL] [--rate-limit N]
 * then point Nimbus at it with STRIPE_API_BASE=<printed url> and any sk_test_… key.
 */
async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      port: { type: 'string', default: '12111' },
      host: { type: 'string', default: '127.0.0.1' },
      'webhook-url': { type: 'string' },
      'webhook-secret': { type: 'string' },
      'rate-limit': { type: 'string' },
    },
  });
  const fake = await startFakeStripe({
    port: Number(values.port), host: values.host, webhookUrl: values['webhook-url'], webhookSecret: values['webhook-secret'],
    meterEventRateLimitPerSecond: values['rate-limit'] ? Number(values['rate-limit']) : undefined,
  });
  console.log(`fake Stripe listening on ${fake.url} (webhook secret ${fake.webhookSecret})`);
  const stop = (): void => void fake.close().then(() => process.exit(0));
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
