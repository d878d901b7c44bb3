import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

export type Json = Record<string, unknown>;

/**
 * Base shapes for the objects the fake returns: Stripe's own example objects (the fixtures stripe-mock serves,
 * `/work/shared/data/stripe-fixtures3.json`, MIT) so the SDK sees every field a real response has. Our values
 * are laid over them. Without the file the fake still answers, with only the fields it fills itself.
 */
const CANDIDATES = [
  process.env.STRIPE_FIXTURES_PATH,
  // `shared/` beside the repository, seen from src/… (jest) and from dist/src/… (compiled)
  join(__dirname, '../../../../../shared/data/stripe-fixtures3.json'),
  join(__dirname, '../../../../../../shared/data/stripe-fixtures3.json'),
];

const RESOURCES = [
  'customer', 'product', 'price', 'billing.meter', 'billing.meter_event', 'billing.meter_event_summary',
  'subscription', 'subscription_item', 'invoice', 'line_item', 'event',
] as const;
export type Resource = (typeof RESOURCES)[number];

/**
 * Example values in the fixtures that would mean something wrong if left in place (a discount, a cancellation
 * date, a quantity transform that would change invoice amounts…): they are reset to what a fresh object has.
 */
const RESET: Partial<Record<Resource, Json>> = {
  customer: { discount: null, shipping: null, address: null },
  product: { package_dimensions: null, default_price: null, description: null },
  price: { transform_quantity: null, custom_unit_amount: null },
  subscription: {
    cancel_at: null, canceled_at: null, ended_at: null, trial_start: null, trial_end: null, pending_update: null,
    pending_setup_intent: null, transfer_data: null, pause_collection: null, pending_invoice_item_interval: null,
    next_pending_invoice_item_invoice: null, billing_cycle_anchor_config: null, billing_schedules: [],
    billing_thresholds: null, cancel_at_period_end: false, latest_invoice: null, discounts: [],
    managed_payments: null, schedule: null,
  },
  subscription_item: { plan: null, billing_thresholds: null, discounts: [] },
  invoice: {
    last_finalization_error: null, from_invoice: null, shipping_cost: null, shipping_details: null, amount_overpaid: 0,
    due_date: null, next_payment_attempt: null, webhooks_delivered_at: null, customer_shipping: null,
    customer_address: null, effective_at: null, discounts: [], total_discount_amounts: [],
  },
  line_item: { discount_amounts: [], discounts: [], pretax_credit_amounts: [], taxes: [] },
};

export class Fixtures {
  private readonly shapes: Partial<Record<Resource, Json>>;
  readonly source: string | undefined;

  constructor(path?: string) {
    this.source = path ?? CANDIDATES.find((p): p is string => !!p && existsSync(p));
    if (path && !existsSync(path)) throw new Error(`fake-stripe: no fixtures file at ${path}`);
    const all = this.source ? (JSON.parse(readFileSync(this.source, 'utf8')) as { resources: Record<string, Json> }).resources : {};
    this.shapes = Object.fromEntries(RESOURCES.filter((r) => all[r]).map((r) => [r, { ...all[r], ...RESET[r] }]));
  }

  /** A fresh copy of the base shape of `resource` with `values` over it. */
  build<T extends Json>(resource: Resource, values: T): Json & T {
    return { ...structuredClone(this.shapes[resource] ?? {}), ...values };
  }
}
