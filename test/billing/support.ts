import { startFakeStripe, type FakeStripe, type FakeStripeOptions } from '../../src/modules/billing/fake-stripe';

/** The environment that points Nimbus at a fake Stripe (the same code path as real Stripe, another host). */
export const stripeEnv = (fake: FakeStripe, extra: Record<string, string> = {}): Record<string, string> => ({
  STRIPE_SECRET_KEY: 'sk_test_nimbus_tests',
  STRIPE_API_BASE: fake.url,
  STRIPE_WEBHOOK_SECRET: fake.webhookSecret,
  ...extra,
});

export const startFake = (opts: FakeStripeOptions = {}) => startFakeStripe(opts);

/** The four meters' event names, in price-book order. */
export const EVENT_NAMES = ['nimbus_prediction_cpu_ms', 'nimbus_prediction_gpu_ms', 'nimbus_training_cpu_ms', 'nimbus_training_gpu_ms'] as const;

export const USAGE = `query Usage($from: DateTime!, $to: DateTime!) {
  usage(from: $from, to: $to) { totalSeconds total { amountCents currency } rows { service hardware seconds minutes cost { amountCents currency } } }
}`;
export const CURRENT_BILL = `query CurrentBill {
  currentBill { periodStart periodEnd lines { description minutes unitAmountCents amount { amountCents currency } } total { amountCents currency } spendLimit { amountCents currency } }
}`;
export const INVOICES = `query Invoices {
  invoices { id number status total { amountCents currency } periodStart periodEnd hostedInvoiceUrl }
}`;
export const INVOICE = `query Invoice($id: ID!) { invoice(id: $id) { id number status total { amountCents currency } } }`;
export const SET_SPEND_LIMIT = `mutation SetSpendLimit($amountCents: Int!) { setSpendLimit(amountCents: $amountCents) { spendLimit { amountCents currency } } }`;
