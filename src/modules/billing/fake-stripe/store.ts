import { randomBytes } from 'node:crypto';
import { ApiError, invalid, missing, newId, Reader } from './codec';
import { Fixtures, type Json } from './fixtures';
import {
  emptyState, type ApiListObj, type CustomerObj, type FakeStripeState, type Formula, type Interval, type Metadata,
  type MeterObj, type PriceObj, type ProductObj, type SubscriptionItemObj, type SubscriptionObj,
} from './objects';

const INTERVALS: readonly Interval[] = ['day', 'week', 'month', 'year'];
const FORMULAS: readonly Formula[] = ['sum', 'count', 'last'];
const DECIMAL = /^\d+(\.\d{1,12})?$/;

/** The start of period `n` (0 = the one starting at `anchor`), in Unix seconds; months keep the anchor's day, clamped. */
export function shiftPeriod(anchor: number, interval: Interval, n: number): number {
  if (interval === 'day' || interval === 'week') return anchor + n * (interval === 'day' ? 1 : 7) * 86_400;
  const d = new Date(anchor * 1000);
  const month = d.getUTCMonth() + (interval === 'year' ? 12 * n : n);
  const lastDay = new Date(Date.UTC(d.getUTCFullYear(), month + 1, 0)).getUTCDate();
  return Date.UTC(d.getUTCFullYear(), month, Math.min(d.getUTCDate(), lastDay), d.getUTCHours(), d.getUTCMinutes(), d.getUTCSeconds()) / 1000;
}

/** Index of the billing period that contains `t` (0 before or at the anchor's first period). */
export function periodIndex(anchor: number, interval: Interval, count: number, t: number): number {
  let n = 0;
  while (shiftPeriod(anchor, interval, (n + 1) * count) <= t) n++;
  return n;
}

/** Creates, finds and lists the catalogue objects and subscriptions, with Stripe's validation rules. */
export class Store {
  readonly state: FakeStripeState = emptyState();

  constructor(readonly fixtures: Fixtures, private readonly clock: () => number) {}

  nowMs(): number {
    return this.clock();
  }

  now(): number {
    return Math.floor(this.clock() / 1000);
  }

  /** Stripe's list envelope with `limit`, `starting_after` and `ending_before`; `items` are newest first. */
  page<T extends { id: string }>(items: T[], r: Reader, url: string): ApiListObj<T> {
    const limit = r.int('limit') ?? 10;
    if (limit < 1 || limit > 100) throw invalid('This value must be between 1 and 100.', 'limit');
    const after = r.str('starting_after');
    const before = r.str('ending_before');
    let from = 0;
    let to = items.length;
    if (after) from = this.cursor(items, after, 'starting_after') + 1;
    if (before) to = this.cursor(items, before, 'ending_before');
    const slice = before ? items.slice(Math.max(from, to - limit), to) : items.slice(from, Math.min(to, from + limit));
    const hasMore = before ? to - limit > from : from + limit < to;
    return { object: 'list', data: slice, has_more: hasMore, url };
  }

  private cursor(items: { id: string }[], id: string, param: string): number {
    const i = items.findIndex((x) => x.id === id);
    if (i < 0) throw invalid(`Invalid ${param} object ID: ${id}`, param);
    return i;
  }

  newestFirst<T>(map: Map<string, T>, keep: (x: T) => boolean = () => true): T[] {
    return [...map.values()].filter(keep).reverse();
  }

  /** Replaces ids on `paths` (`product`, `data.customer`, `items.data.price.product`…) with the objects; works on a copy. */
  expand(body: object, paths: string[]): object {
    const copy = structuredClone(body) as Json;
    for (const path of paths) this.expandPath(copy, path.split('.'), path);
    return copy;
  }

  private expandPath(node: Json, parts: string[], path: string): void {
    const [head, ...rest] = parts;
    const value = node[head];
    if (Array.isArray(value)) {
      for (const el of value) if (el && typeof el === 'object') this.expandPath(el as Json, rest, path);
    } else if (rest.length > 0 && value && typeof value === 'object') {
      this.expandPath(value as Json, rest, path);
    } else if (rest.length === 0 && typeof value === 'string') {
      const found = this.lookup(value);
      if (!found) throw invalid(`This property cannot be expanded (${path}).`, 'expand');
      node[head] = structuredClone(found);
    } else if (rest.length === 0 && value !== null && typeof value !== 'object') {
      throw invalid(`This property cannot be expanded (${path}).`, 'expand');
    }
  }

  private lookup(id: string): Json | undefined {
    const s = this.state;
    for (const map of [s.customers, s.products, s.prices, s.meters, s.subscriptions, s.invoices] as Map<string, Json>[]) {
      const found = map.get(id);
      if (found) return found;
    }
    return undefined;
  }

  // ---------- customers ----------

  createCustomer(r: Reader): CustomerObj {
    r.only(['name', 'email', 'metadata', 'description', 'phone']);
    const customer = this.fixtures.build('customer', {
      id: newId('cus', 14), object: 'customer' as const, created: this.now(), livemode: false,
      name: r.str('name') || null, email: r.str('email') || null, description: r.str('description') || null,
      phone: r.str('phone') || null, metadata: mergeMetadata({}, r.dict('metadata')), currency: null,
      invoice_prefix: randomBytes(4).toString('hex').toUpperCase(), next_invoice_sequence: 1, balance: 0,
    });
    this.state.customers.set(customer.id, customer);
    return customer;
  }

  customer(id: string): CustomerObj {
    return this.state.customers.get(id) ?? throwIt(missing('customer', id));
  }

  updateCustomer(id: string, r: Reader): CustomerObj {
    r.only(['name', 'email', 'metadata', 'description', 'phone']);
    const c = this.customer(id);
    for (const field of ['name', 'email', 'description', 'phone'] as const) if (r.has(field)) c[field] = r.str(field) || null;
    c.metadata = mergeMetadata(c.metadata, r.dict('metadata'));
    return c;
  }

  /** Search queries of the form `email:'a@b.c' AND metadata['tenant']:'t1'` (exact matches only). */
  searchCustomers(query: string): CustomerObj[] {
    const clauses = query.split(/\s+AND\s+/i).map((clause) => {
      const m = /^\s*(email|name|metadata\['([^']+)'\])\s*:\s*'([^']*)'\s*$/.exec(clause);
      if (!m) throw invalid(`Unsupported search query clause: ${clause}`, 'query');
      return (c: CustomerObj) => (m[2] !== undefined ? c.metadata[m[2]] : c[m[1] as 'email' | 'name']) === m[3];
    });
    return this.newestFirst(this.state.customers, (c) => clauses.every((ok) => ok(c)));
  }

  // ---------- products and prices ----------

  createProduct(r: Reader): ProductObj {
    r.only(['id', 'name', 'description', 'metadata', 'active', 'unit_label']);
    const id = r.str('id') ?? newId('prod', 14);
    if (this.state.products.has(id)) throw invalid(`Product already exists.`, 'id', 'resource_already_exists');
    const product = this.buildProduct(id, r);
    this.state.products.set(id, product);
    return product;
  }

  private buildProduct(id: string, r: Reader): ProductObj {
    return this.fixtures.build('product', {
      id, object: 'product' as const, name: r.reqStr('name'), description: r.str('description') || null,
      active: r.bool('active') ?? true, created: this.now(), updated: this.now(), livemode: false,
      metadata: mergeMetadata({}, r.dict('metadata')), unit_label: r.str('unit_label') || null, default_price: null,
    });
  }

  product(id: string): ProductObj {
    return this.state.products.get(id) ?? throwIt(missing('product', id));
  }

  createPrice(r: Reader): PriceObj {
    r.only(['currency', 'product', 'product_data', 'unit_amount', 'unit_amount_decimal', 'recurring', 'lookup_key',
      'transfer_lookup_key', 'nickname', 'metadata', 'active', 'billing_scheme', 'tax_behavior']);
    const currency = r.reqStr('currency').toLowerCase();
    const productData = r.obj('product_data');
    if (r.has('product') === !!productData) throw invalid('You must specify either `product` or `product_data`.', 'product');
    if ((r.str('billing_scheme') ?? 'per_unit') !== 'per_unit') throw invalid('The fake supports only billing_scheme=per_unit.', 'billing_scheme');
    const unit = this.unitAmount(r);
    const recurring = this.recurring(r.obj('recurring'));
    const lookupKey = r.str('lookup_key') || null;
    if (lookupKey) this.claimLookupKey(lookupKey, r.bool('transfer_lookup_key') ?? false);

    let productId = r.str('product');
    if (productData) {
      productData.only(['name', 'metadata', 'active', 'unit_label']);
      const product = this.buildProduct(newId('prod', 14), productData);
      this.state.products.set(product.id, product);
      productId = product.id;
    } else if (productId) this.product(productId);

    const price = this.fixtures.build('price', {
      id: newId('price', 24), object: 'price' as const, product: productId as string, currency, active: r.bool('active') ?? true,
      created: this.now(), livemode: false, lookup_key: lookupKey, nickname: r.str('nickname') || null,
      metadata: mergeMetadata({}, r.dict('metadata')), billing_scheme: 'per_unit', tiers_mode: null,
      tax_behavior: r.str('tax_behavior') ?? 'unspecified', type: recurring ? 'recurring' as const : 'one_time' as const,
      recurring, ...unit,
    });
    this.state.prices.set(price.id, price);
    return price;
  }

  private unitAmount(r: Reader): { unit_amount: number | null; unit_amount_decimal: string } {
    const whole = r.int('unit_amount');
    const decimal = r.str('unit_amount_decimal');
    if ((whole === undefined) === (decimal === undefined)) {
      throw invalid('You must pass exactly one of `unit_amount` or `unit_amount_decimal`.', 'unit_amount');
    }
    if (whole !== undefined) {
      if (whole < 0) throw invalid('This value must be greater than or equal to 0.', 'unit_amount');
      return { unit_amount: whole, unit_amount_decimal: String(whole) };
    }
    if (!DECIMAL.test(decimal as string)) throw invalid('Invalid decimal: at most 12 decimal places, not negative.', 'unit_amount_decimal');
    const normal = (decimal as string).replace(/^0+(?=\d)/, '');
    return { unit_amount: /^\d+(\.0+)?$/.test(normal) ? parseInt(normal, 10) : null, unit_amount_decimal: normal };
  }

  private recurring(r: Reader | undefined): PriceObj['recurring'] {
    if (!r) return null;
    r.only(['interval', 'interval_count', 'usage_type', 'meter', 'trial_period_days']);
    const interval = r.reqStr('interval') as Interval;
    if (!INTERVALS.includes(interval)) throw invalid(`Invalid interval: must be one of ${INTERVALS.join(', ')}`, 'recurring[interval]');
    const usageType = r.str('usage_type') ?? 'licensed';
    if (usageType !== 'licensed' && usageType !== 'metered') throw invalid('Invalid usage_type', 'recurring[usage_type]');
    const meter = r.str('meter') ?? null;
    if (usageType === 'metered' && !meter) throw invalid('A meter is required for prices with `usage_type=metered`.', 'recurring[meter]');
    if (usageType === 'licensed' && meter) throw invalid('`meter` is only allowed with `usage_type=metered`.', 'recurring[meter]');
    if (meter && this.meter(meter, 'recurring[meter]').status !== 'active') {
      throw invalid(`The meter ${meter} is inactive.`, 'recurring[meter]');
    }
    return { interval, interval_count: r.int('interval_count') ?? 1, usage_type: usageType, meter, trial_period_days: null };
  }

  private claimLookupKey(key: string, transfer: boolean): void {
    const holder = [...this.state.prices.values()].find((p) => p.lookup_key === key);
    if (!holder) return;
    if (!transfer) throw invalid(`A price (\`${holder.id}\`) already uses that lookup key.`, 'lookup_key');
    holder.lookup_key = null;
  }

  price(id: string, param = 'id'): PriceObj {
    return this.state.prices.get(id) ?? throwIt(missing('price', id, param));
  }

  // ---------- billing meters ----------

  createMeter(r: Reader): MeterObj {
    r.only(['display_name', 'event_name', 'default_aggregation', 'customer_mapping', 'value_settings', 'event_time_window']);
    const eventName = r.reqStr('event_name');
    this.assertEventNameFree(eventName);
    const aggregation = r.obj('default_aggregation') ?? throwIt(invalid('Missing required param: default_aggregation.', 'default_aggregation', 'parameter_missing'));
    const formula = aggregation.only(['formula']).reqStr('formula') as Formula;
    if (!FORMULAS.includes(formula)) throw invalid(`Invalid formula: must be one of ${FORMULAS.join(', ')}`, 'default_aggregation[formula]');
    const mapping = r.obj('customer_mapping')?.only(['event_payload_key', 'type']);
    if (mapping && mapping.reqStr('type') !== 'by_id') throw invalid('customer_mapping[type] must be `by_id`.', 'customer_mapping[type]');
    const meter = this.fixtures.build('billing.meter', {
      id: newId('mtr_test', 32), object: 'billing.meter' as const, display_name: r.reqStr('display_name'), event_name: eventName,
      status: 'active' as const, created: this.now(), updated: this.now(), livemode: false,
      default_aggregation: { formula },
      customer_mapping: { event_payload_key: mapping?.reqStr('event_payload_key') ?? 'stripe_customer_id', type: 'by_id' as const },
      value_settings: { event_payload_key: r.obj('value_settings')?.only(['event_payload_key']).reqStr('event_payload_key') ?? 'value' },
      event_time_window: r.str('event_time_window') ?? null, status_transitions: { deactivated_at: null },
    });
    this.state.meters.set(meter.id, meter);
    return meter;
  }

  /** Stripe allows one active meter per event name. */
  private assertEventNameFree(eventName: string): void {
    const taken = [...this.state.meters.values()].find((m) => m.status === 'active' && m.event_name === eventName);
    if (taken) throw invalid(`An active meter (\`${taken.id}\`) already uses the event_name \`${eventName}\`.`, 'event_name');
  }

  meter(id: string, param = 'id'): MeterObj {
    return this.state.meters.get(id) ?? throwIt(missing('billing.meter', id, param));
  }

  setMeterStatus(id: string, active: boolean): MeterObj {
    const m = this.meter(id);
    if (active && m.status !== 'active') this.assertEventNameFree(m.event_name);
    m.status = active ? 'active' : 'inactive';
    m.status_transitions = { deactivated_at: active ? null : this.now() };
    m.updated = this.now();
    return m;
  }

  // ---------- subscriptions ----------

  createSubscription(r: Reader): SubscriptionObj {
    r.only(['customer', 'items', 'metadata', 'description', 'collection_method', 'days_until_due', 'payment_behavior', 'proration_behavior']);
    const customer = this.customer(r.reqStr('customer'));
    const items = r.list('items');
    if (items.length === 0) throw invalid('Missing required param: items.', 'items', 'parameter_missing');
    const id = newId('sub', 24);
    const now = this.now();
    const data = items.map((item, i) => {
      item.only(['price', 'quantity', 'metadata']);
      const price = this.price(item.reqStr('price'), `items[${i}][price]`);
      if (!price.recurring) throw invalid(`The price \`${price.id}\` is not recurring.`, `items[${i}][price]`);
      const quantity = item.int('quantity');
      if (price.recurring.usage_type === 'metered' && quantity !== undefined) {
        throw invalid(`Quantity should not be specified where usage_type is \`metered\`. Remove quantity from \`items[${i}]\`.`, `items[${i}][quantity]`);
      }
      return this.fixtures.build('subscription_item', {
        id: newId('si', 14), object: 'subscription_item' as const, subscription: id, price: structuredClone(price),
        created: now, current_period_start: now, current_period_end: now, metadata: mergeMetadata({}, item.dict('metadata')),
        ...(price.recurring.usage_type === 'licensed' ? { quantity: quantity ?? 1 } : {}),
      });
    });
    const currencies = new Set(data.map((it) => it.price.currency));
    if (currencies.size > 1) throw invalid('All prices on a subscription must have the same `currency`.', 'items');
    const currency = data[0].price.currency;
    if (customer.currency && customer.currency !== currency) {
      throw invalid(`You cannot combine currencies on a single customer. This customer has had a subscription or payment in ${customer.currency}.`, 'items');
    }
    customer.currency = currency;
    const sub = this.fixtures.build('subscription', {
      id, object: 'subscription' as const, customer: customer.id, currency, created: now, start_date: now, billing_cycle_anchor: now,
      status: 'active' as const, canceled_at: null, ended_at: null, livemode: false, description: r.str('description') || null,
      metadata: mergeMetadata({}, r.dict('metadata')), collection_method: r.str('collection_method') ?? 'charge_automatically',
      days_until_due: r.int('days_until_due') ?? null,
      items: { object: 'list' as const, data, has_more: false, total_count: data.length, url: `/v1/subscription_items?subscription=${id}` },
    });
    this.state.subscriptions.set(id, sub);
    return this.refreshPeriods(sub);
  }

  subscription(id: string, param = 'id'): SubscriptionObj {
    const sub = this.state.subscriptions.get(id) ?? throwIt(missing('subscription', id, param));
    return this.refreshPeriods(sub);
  }

  subscriptions(keep: (s: SubscriptionObj) => boolean): SubscriptionObj[] {
    return this.newestFirst(this.state.subscriptions, keep).map((s) => this.refreshPeriods(s));
  }

  cancelSubscription(id: string): SubscriptionObj {
    const sub = this.subscription(id);
    if (sub.status === 'canceled') throw invalid(`No such subscription: '${id}' is already canceled.`, 'id');
    sub.status = 'canceled';
    sub.canceled_at = sub.ended_at = this.now();
    return sub;
  }

  /** Items carry `current_period_start/end` (moved off the subscription in API 2025-03-31); they follow the clock. */
  private refreshPeriods(sub: SubscriptionObj): SubscriptionObj {
    if (sub.status === 'canceled') return sub;
    for (const item of sub.items.data) {
      const p = this.currentPeriod(sub, item);
      item.current_period_start = p.start;
      item.current_period_end = p.end;
    }
    return sub;
  }

  /** The billing period of `item` that is `offset` periods from the one containing now. */
  currentPeriod(sub: SubscriptionObj, item: SubscriptionItemObj, offset = 0): { start: number; end: number } {
    const { interval, interval_count: count } = item.price.recurring as NonNullable<PriceObj['recurring']>;
    const n = periodIndex(sub.billing_cycle_anchor, interval, count, this.now()) + offset;
    return { start: shiftPeriod(sub.billing_cycle_anchor, interval, n * count), end: shiftPeriod(sub.billing_cycle_anchor, interval, (n + 1) * count) };
  }
}

/** Stripe merges metadata on update; an empty value removes the key. */
function mergeMetadata(current: Metadata, update: Metadata | undefined): Metadata {
  const next = { ...current, ...update };
  for (const [k, v] of Object.entries(next)) if (v === '') delete next[k];
  return next;
}

export function throwIt(error: ApiError): never {
  throw error;
}
