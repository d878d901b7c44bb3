import Stripe from 'stripe';
import type { Logger } from 'pino';
import { PICO_DIGITS, parseDecimal } from './money';
import { METERS, centsPerMinuteOf, meterKey, type MeterDef, type PriceBook, type Query } from './price-book';
import { RefreshingCache } from '../../platform/cache';
import { isMissing } from './stripe-gateway';

export interface StripeMeter extends MeterDef {
  meterId: string;
  priceId: string;
  /** Cents per device-millisecond of the Stripe price. */
  unitAmountDecimal: string;
}

/** How long the meters read from `billing_meters` are used before they are checked against the price book again. */
const CATALOG_TTL_MS = 5_000;

/** Set-up calls may retry (the SDK reuses the idempotency key on its own retries). */
const SETUP = { maxNetworkRetries: 2 } as const;

/**
 * The platform's Stripe objects: a product, a sum Billing Meter and a metered monthly Price per
 * (job kind, hardware). Idempotent: objects are found first (product id, meter event_name, price
 * lookup_key) and created with idempotency keys; a price-book change creates a new Price and moves
 * the lookup key to it. The ids land in `billing_meters`.
 */
export class StripeCatalog {
  private readonly cache = new RefreshingCache<'meters', Map<string, StripeMeter>>({ ttlMs: CATALOG_TTL_MS });

  constructor(
    private readonly stripe: Stripe,
    private readonly query: Query,
    private readonly prices: PriceBook,
    private readonly log?: Logger,
  ) {}

  /**
   * The meters, from `billing_meters` when it matches the price book, else after syncing with
   * Stripe; looked at again every few seconds, as the price book is, so a price change (and the
   * new Prices of `stripe:setup`) reaches subscriptions created by a running process.
   */
  async meters(): Promise<Map<string, StripeMeter>> {
    return (await this.cache.get('meters', () => this.loadOrSync()))!; // loadOrSync never answers null
  }

  forget(): void {
    this.cache.forget('meters');
  }

  private async loadOrSync(): Promise<Map<string, StripeMeter>> {
    const stored = await this.stored();
    const prices = await this.prices.prices();
    const current = METERS.every((m) => {
      const s = stored.get(meterKey(m.kind, m.hardware));
      return s && s.unitAmountDecimal === prices.get(meterKey(m.kind, m.hardware))?.perMsDecimal;
    });
    return current ? stored : this.sync();
  }

  private async stored(): Promise<Map<string, StripeMeter>> {
    const rows: Array<{ job_kind: string; hardware: string; stripe_meter_id: string; stripe_price_id: string; unit_amount_decimal: string }> =
      await this.query('SELECT job_kind, hardware, stripe_meter_id, stripe_price_id, unit_amount_decimal FROM billing_meters');
    const out = new Map<string, StripeMeter>();
    for (const r of rows) {
      const def = METERS.find((m) => m.kind === r.job_kind && m.hardware === r.hardware);
      if (def) out.set(meterKey(def.kind, def.hardware), { ...def, meterId: r.stripe_meter_id, priceId: r.stripe_price_id, unitAmountDecimal: r.unit_amount_decimal });
    }
    return out;
  }

  /** Creates or updates every platform object in Stripe and records the ids (`npm run stripe:setup`). */
  async sync(): Promise<Map<string, StripeMeter>> {
    const prices = await this.prices.prices();
    const existingMeters = new Map<string, Stripe.Billing.Meter>();
    for await (const m of this.stripe.billing.meters.list({ status: 'active', limit: 100 }, SETUP)) existingMeters.set(m.event_name, m);
    const out = new Map<string, StripeMeter>();
    for (const def of METERS) {
      const price = prices.get(meterKey(def.kind, def.hardware));
      if (!price) throw new Error(`price_book has no price for ${def.kind} ${def.hardware}`);
      const product = await this.product(def);
      const meter = existingMeters.get(def.eventName) ?? await this.stripe.billing.meters.create({
        display_name: def.displayName, event_name: def.eventName, default_aggregation: { formula: 'sum' },
        customer_mapping: { type: 'by_id', event_payload_key: 'stripe_customer_id' }, value_settings: { event_payload_key: 'value' },
      }, { ...SETUP, idempotencyKey: `meter-${def.eventName}` });
      const stripePrice = await this.price(def, product.id, meter.id, price.perMsDecimal);
      await this.query(
        `INSERT INTO billing_meters (job_kind, hardware, event_name, stripe_meter_id, stripe_price_id, unit_amount_decimal)
         VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (job_kind, hardware) DO UPDATE SET event_name = EXCLUDED.event_name, stripe_meter_id = EXCLUDED.stripe_meter_id,
           stripe_price_id = EXCLUDED.stripe_price_id, unit_amount_decimal = EXCLUDED.unit_amount_decimal, updated_at = now()`,
        [def.kind, def.hardware, def.eventName, meter.id, stripePrice.id, price.perMsDecimal],
      );
      out.set(meterKey(def.kind, def.hardware), { ...def, meterId: meter.id, priceId: stripePrice.id, unitAmountDecimal: price.perMsDecimal });
    }
    this.log?.info({ meters: [...out.values()].map((m) => m.eventName) }, 'Stripe meters and prices in place');
    return out;
  }

  private async product(def: MeterDef): Promise<Stripe.Product> {
    try {
      return await this.stripe.products.retrieve(def.productId, {}, SETUP);
    } catch (err) {
      if (!isMissing(err)) throw err;
      return this.stripe.products.create({
        id: def.productId, name: `Nimbus ${def.kind === 'PREDICTION' ? 'prediction' : 'training'} ${def.hardware} time`, unit_label: 'device-ms',
      }, { ...SETUP, idempotencyKey: `product-${def.productId}` });
    }
  }

  /** The active price under the meter's lookup key if it bills the right amount on the right meter, else a new one. */
  private async price(def: MeterDef, productId: string, meterId: string, perMsDecimal: string): Promise<Stripe.Price> {
    const found = (await this.stripe.prices.list({ lookup_keys: [def.eventName], limit: 1 }, SETUP)).data[0];
    const same = found && found.active && found.recurring?.meter === meterId && found.unit_amount_decimal !== null &&
      parseDecimal(found.unit_amount_decimal.toString(), PICO_DIGITS) === parseDecimal(perMsDecimal, PICO_DIGITS);
    if (same) return found;
    return this.stripe.prices.create({
      currency: 'usd', product: productId, unit_amount_decimal: Stripe.Decimal.from(perMsDecimal),
      recurring: { interval: 'month', usage_type: 'metered', meter: meterId },
      lookup_key: def.eventName, transfer_lookup_key: true, nickname: `${def.displayName} at ${perMsDecimal}¢/ms`,
    }, { ...SETUP, idempotencyKey: `price-${def.eventName}-${meterId}-${perMsDecimal}` });
  }
}

export interface TenantBillingRow {
  id: string;
  name: string;
  stripe_customer_id: string | null;
  stripe_subscription_id: string | null;
}

/** Runs `fn` with a query function that may read and update the tenant's row (RLS-scoped in the API). */
export type TenantScope = <T>(tenantId: string, fn: (query: Query) => Promise<T>) => Promise<T>;

/**
 * A Stripe Customer and a Subscription on the four metered prices per tenant. Created when the
 * tenant is created and re-ensured by the meter reporter (Stripe may be down at sign-up); the
 * idempotency keys `customer-<tenant>` / `subscription-<tenant>` make a retry never create twice.
 */
export class StripeAccounts {
  constructor(private readonly stripe: Stripe, private readonly catalog: StripeCatalog, private readonly scope: TenantScope) {}

  /** `quick`: one try with a short timeout (sign-up must not wait on Stripe; the reporter retries later). */
  async ensure(tenantId: string, opts: { quick?: boolean } = {}): Promise<{ customerId: string; subscriptionId: string }> {
    const request = opts.quick ? { maxNetworkRetries: 0, timeout: 5000 } : SETUP;
    const tenant = await this.scope(tenantId, async (q) => (await q(
      'SELECT id, name, stripe_customer_id, stripe_subscription_id FROM tenants WHERE id = $1', [tenantId],
    ))[0] as TenantBillingRow | undefined);
    if (!tenant) throw new Error(`tenant ${tenantId} not found`);
    let customerId = tenant.stripe_customer_id;
    if (!customerId) {
      const customer = await this.stripe.customers.create(
        { name: tenant.name, metadata: { tenant_id: tenant.id } },
        { ...request, idempotencyKey: `customer-${tenant.id}` },
      );
      customerId = customer.id;
      await this.scope(tenantId, (q) => q('UPDATE tenants SET stripe_customer_id = $2 WHERE id = $1 AND stripe_customer_id IS NULL', [tenant.id, customerId]));
    }
    let subscriptionId = tenant.stripe_subscription_id;
    if (!subscriptionId) {
      const meters = await this.catalog.meters();
      const subscription = await this.stripe.subscriptions.create({
        customer: customerId, items: [...meters.values()].map((m) => ({ price: m.priceId })), metadata: { tenant_id: tenant.id },
      }, { ...request, idempotencyKey: `subscription-${tenant.id}` });
      subscriptionId = subscription.id;
      await this.scope(tenantId, (q) => q(
        `UPDATE tenants SET stripe_subscription_id = $2, stripe_billing_anchor = to_timestamp($3), subscribed_prices = $4::jsonb
          WHERE id = $1 AND stripe_subscription_id IS NULL`,
        [tenant.id, subscription.id, subscription.billing_cycle_anchor, JSON.stringify(subscribedPrices(subscription, meters))],
      ));
    }
    return { customerId, subscriptionId };
  }
}

/**
 * The prices a new subscription's items carry, by meter key (what Stripe will invoice the tenant
 * at): each item's own Price as Stripe returned it (a retried create returns the subscription made
 * the first time, with that time's prices), else the catalog's price for its meter.
 */
export function subscribedPrices(subscription: Stripe.Subscription, meters: Map<string, StripeMeter>): Record<string, string> {
  const out: Record<string, string> = {};
  for (const m of meters.values()) {
    const item = subscription.items?.data?.find((it) => it.price?.recurring?.meter === m.meterId || it.price?.id === m.priceId);
    const perMs = item?.price?.unit_amount_decimal ?? m.unitAmountDecimal;
    out[meterKey(m.kind, m.hardware)] = centsPerMinuteOf(String(perMs));
  }
  return out;
}
