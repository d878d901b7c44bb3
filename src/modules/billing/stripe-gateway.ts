import Stripe from 'stripe';
import type { Env } from '../../config/env';
import { startFakeStripe } from './fake-stripe';

/** Used when STRIPE_API_BASE points at a local server (stripe-mock, the fake) and no key is given. */
const LOCAL_TEST_KEY = 'sk_test_nimbus_local';
const LOCAL_FAKE_PORT = 12111;

export interface StripeSettings {
  secretKey: string;
  /** http(s)://host:port of another Stripe API server (the fake, stripe-mock); Stripe itself when absent. */
  apiBase: string | undefined;
  webhookSecret: string | undefined;
  meterEventsPerSecond: number;
}

/** Stripe as configured, or null when billing has no Stripe (no key and no API base). */
export function stripeSettings(env: Env): StripeSettings | null {
  const secretKey = env.STRIPE_SECRET_KEY ?? (env.STRIPE_API_BASE ? LOCAL_TEST_KEY : undefined);
  if (!secretKey) return null;
  return {
    secretKey, apiBase: env.STRIPE_API_BASE, webhookSecret: env.STRIPE_WEBHOOK_SECRET,
    meterEventsPerSecond: env.STRIPE_METER_EVENTS_PER_SECOND,
  };
}

/**
 * The one way Nimbus builds a Stripe client. Retries are off by default: callers choose per request
 * (`maxNetworkRetries` for set-up calls; the meter reporter runs its own backoff and rate limit).
 */
export function createStripeClient(s: StripeSettings, opts: { timeoutMs?: number } = {}): Stripe {
  const base = s.apiBase ? new URL(s.apiBase) : null;
  const protocol = base?.protocol === 'http:' ? 'http' : 'https';
  return new Stripe(s.secretKey, {
    maxNetworkRetries: 0,
    timeout: opts.timeoutMs ?? 20_000,
    // No request-latency telemetry headers to Stripe (and no buffer warnings at high meter-event rates).
    telemetry: false,
    appInfo: { name: 'nimbus' },
    ...(base ? { host: base.hostname, port: Number(base.port || (protocol === 'http' ? 80 : 443)), protocol } : {}),
  });
}

/**
 * For the entry points that run the control plane (`npm start`, `npm run control-plane`): with no
 * Stripe configured, start the local fake Stripe in this process and point the environment at it,
 * so billing works end to end on a laptop. Says so on stdout.
 */
export async function withLocalStripe(env: Env): Promise<{ env: Env; close(): Promise<void> }> {
  if (stripeSettings(env)) return { env, close: async () => undefined };
  const fake = await startFakeStripe({ port: LOCAL_FAKE_PORT }).catch((err: NodeJS.ErrnoException) => {
    if (err.code !== 'EADDRINUSE') throw err;
    return startFakeStripe({ port: 0 });
  });
  console.log(`Billing: no STRIPE_SECRET_KEY set, using the local fake Stripe at ${fake.url} (webhook secret ${fake.webhookSecret})`);
  return {
    env: { ...env, STRIPE_SECRET_KEY: LOCAL_TEST_KEY, STRIPE_API_BASE: fake.url, STRIPE_WEBHOOK_SECRET: env.STRIPE_WEBHOOK_SECRET ?? fake.webhookSecret },
    close: () => fake.close(),
  };
}

/** Stripe's error for a reused meter event identifier: the event is already recorded. */
export const isDuplicateIdentifier = (err: unknown): boolean =>
  err instanceof Stripe.errors.StripeError && err.statusCode === 400 && err.code === 'resource_already_exists';

export const isMissing = (err: unknown): boolean =>
  err instanceof Stripe.errors.StripeError && err.statusCode === 404;
