import { missing, Reader } from './codec';
import type { Invoicing } from './invoicing';
import type { Metering } from './metering';
import { throwIt, type Store } from './store';

/** `v1` and `v2` take an `sk_` key; `stream` takes a meter event session token. */
export type Auth = 'v1' | 'v2' | 'stream';

export interface Route {
  method: 'GET' | 'POST' | 'DELETE';
  pattern: RegExp;
  auth: Auth;
  /** Meter event endpoints, which `meterEventRateLimitPerSecond` applies to. */
  metered?: boolean;
  handle(r: Reader, ids: string[]): object;
}

const PAGE = ['limit', 'starting_after', 'ending_before'];
const ID = '([^/]+)';

export function buildRoutes(store: Store, metering: Metering, invoicing: Invoicing): Route[] {
  const s = store.state;
  const v1 = (method: Route['method'], path: string, handle: Route['handle'], metered = false): Route =>
    ({ method, pattern: new RegExp(`^${path}$`), auth: 'v1', handle, metered });
  /** Retrieve endpoints take no parameters but `expand`. */
  const retrieve = <T>(get: (id: string) => T) => (r: Reader, [id]: string[]): T => {
    r.only([]);
    return get(id);
  };
  const action = <T>(run: (id: string) => T, allowed: string[] = []) => (r: Reader, [id]: string[]): T => {
    r.only(allowed);
    return run(id);
  };

  return [
    // customers
    v1('POST', '/v1/customers', (r) => store.createCustomer(r)),
    v1('GET', '/v1/customers', (r) => {
      const email = r.only([...PAGE, 'email']).str('email');
      return store.page(store.newestFirst(s.customers, (c) => !email || c.email === email), r, '/v1/customers');
    }),
    v1('GET', '/v1/customers/search', (r) => {
      r.only(['query', 'limit', 'page']);
      const found = store.searchCustomers(r.reqStr('query'));
      const limit = r.int('limit') ?? 10;
      const offset = Number(r.str('page') ?? 0);
      const hasMore = offset + limit < found.length;
      return {
        object: 'search_result', data: found.slice(offset, offset + limit), has_more: hasMore,
        next_page: hasMore ? String(offset + limit) : null, url: '/v1/customers/search',
      };
    }),
    v1('GET', `/v1/customers/${ID}`, retrieve((id) => store.customer(id))),
    v1('POST', `/v1/customers/${ID}`, (r, [id]) => store.updateCustomer(id, r)),

    // products and prices
    v1('POST', '/v1/products', (r) => store.createProduct(r)),
    v1('GET', '/v1/products', (r) => {
      const active = r.only([...PAGE, 'active']).bool('active');
      return store.page(store.newestFirst(s.products, (p) => active === undefined || p.active === active), r, '/v1/products');
    }),
    v1('GET', `/v1/products/${ID}`, retrieve((id) => store.product(id))),
    v1('POST', '/v1/prices', (r) => store.createPrice(r)),
    v1('GET', '/v1/prices', (r) => {
      r.only([...PAGE, 'lookup_keys', 'active', 'product', 'type', 'currency']);
      const keys = r.strings('lookup_keys');
      const [active, product, type, currency] = [r.bool('active'), r.str('product'), r.str('type'), r.str('currency')];
      return store.page(store.newestFirst(s.prices, (p) =>
        (keys.length === 0 || (p.lookup_key !== null && keys.includes(p.lookup_key))) &&
        (active === undefined || p.active === active) && (!product || p.product === product) &&
        (!type || p.type === type) && (!currency || p.currency === currency)), r, '/v1/prices');
    }),
    v1('GET', `/v1/prices/${ID}`, retrieve((id) => store.price(id))),

    // billing meters and meter events
    v1('POST', '/v1/billing/meters', (r) => store.createMeter(r)),
    v1('GET', '/v1/billing/meters', (r) => {
      const status = r.only([...PAGE, 'status']).str('status');
      return store.page(store.newestFirst(s.meters, (m) => !status || m.status === status), r, '/v1/billing/meters');
    }),
    v1('GET', `/v1/billing/meters/${ID}`, retrieve((id) => store.meter(id))),
    v1('POST', `/v1/billing/meters/${ID}`, (r, [id]) => {
      const meter = store.meter(id);
      meter.display_name = r.only(['display_name']).str('display_name') ?? meter.display_name;
      meter.updated = store.now();
      return meter;
    }),
    v1('POST', `/v1/billing/meters/${ID}/deactivate`, action((id) => store.setMeterStatus(id, false))),
    v1('POST', `/v1/billing/meters/${ID}/reactivate`, action((id) => store.setMeterStatus(id, true))),
    v1('GET', `/v1/billing/meters/${ID}/event_summaries`, (r, [id]) => metering.summaries(id, r)),
    v1('POST', '/v1/billing/meter_events', (r) => metering.createV1(r), true),

    // subscriptions
    v1('POST', '/v1/subscriptions', (r) => store.createSubscription(r)),
    v1('GET', '/v1/subscriptions', (r) => {
      r.only([...PAGE, 'customer', 'status', 'price']);
      const [customer, status, price] = [r.str('customer'), r.str('status') ?? 'active', r.str('price')];
      return store.page(store.subscriptions((sub) =>
        (!customer || sub.customer === customer) && (status === 'all' || sub.status === status) &&
        (!price || sub.items.data.some((it) => it.price.id === price))), r, '/v1/subscriptions');
    }),
    v1('GET', `/v1/subscriptions/${ID}`, retrieve((id) => store.subscription(id))),
    v1('DELETE', `/v1/subscriptions/${ID}`, action((id) => store.cancelSubscription(id), ['invoice_now', 'prorate'])),
    v1('GET', '/v1/subscription_items', (r) => {
      const sub = store.subscription(r.only([...PAGE, 'subscription']).reqStr('subscription'), 'subscription');
      return store.page([...sub.items.data].reverse(), r, `/v1/subscription_items?subscription=${sub.id}`);
    }),
    v1('GET', `/v1/subscription_items/${ID}`, retrieve((id) => {
      for (const sub of store.subscriptions(() => true)) {
        const item = sub.items.data.find((it) => it.id === id);
        if (item) return item;
      }
      throw missing('subscription_item', id);
    })),

    // invoices
    v1('POST', '/v1/invoices/create_preview', (r) => invoicing.preview(r)),
    v1('GET', '/v1/invoices', (r) => {
      r.only([...PAGE, 'customer', 'subscription', 'status']);
      const [customer, sub, status] = [r.str('customer'), r.str('subscription'), r.str('status')];
      return store.page(store.newestFirst(s.invoices, (inv) =>
        (!customer || inv.customer === customer) && (!status || inv.status === status) &&
        (!sub || (inv.parent as { subscription_details?: { subscription?: string } }).subscription_details?.subscription === sub)), r, '/v1/invoices');
    }),
    v1('GET', `/v1/invoices/${ID}`, retrieve((id) => s.invoices.get(id) ?? throwIt(missing('invoice', id)))),
    v1('GET', `/v1/invoices/${ID}/lines`, (r, [id]) => {
      const invoice = s.invoices.get(id) ?? throwIt(missing('invoice', id));
      return store.page(invoice.lines.data, r.only(PAGE), `/v1/invoices/${id}/lines`);
    }),

    // events sent with emitWebhook
    v1('GET', '/v1/events', (r) => {
      const type = r.only([...PAGE, 'type']).str('type');
      return store.page(store.newestFirst(s.events, (e) => !type || e.type === type), r, '/v1/events');
    }),
    v1('GET', `/v1/events/${ID}`, retrieve((id) => s.events.get(id) ?? throwIt(missing('event', id)))),

    // v2 (JSON bodies)
    { method: 'POST', pattern: /^\/v2\/billing\/meter_events$/, auth: 'v2', metered: true, handle: (r) => metering.createV2(r) },
    { method: 'POST', pattern: /^\/v2\/billing\/meter_event_session$/, auth: 'v2', handle: action(() => metering.createSession()) },
    { method: 'POST', pattern: /^\/v2\/billing\/meter_event_stream$/, auth: 'stream', metered: true, handle: (r) => metering.stream(r) },
  ];
}
