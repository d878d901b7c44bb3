import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import Stripe from 'stripe';
import { signPayload, startFakeStripe, type FakeStripe } from '../../src/modules/billing/fake-stripe';
import { parseForm } from '../../src/modules/billing/fake-stripe/codec';
import { Faults } from '../../src/modules/billing/fake-stripe/faults';
import { lineAmount } from '../../src/modules/billing/fake-stripe/invoicing';

let fake: FakeStripe;
let stripe: Stripe;

beforeAll(async () => {
  fake = await startFakeStripe();
  stripe = fake.client();
});
afterAll(() => fake.close());
afterEach(() => fake.clearFaults());

let seq = 0;
const unique = (name: string): string => `${name}_${++seq}_${Date.now()}`;

/** A customer subscribed to a metered price of 0.5 cent per unit on a fresh sum meter. */
async function meteredCustomer(unitAmountDecimal = '0.5') {
  const eventName = unique('gpu_minutes');
  const meter = await stripe.billing.meters.create({
    display_name: 'GPU minutes', event_name: eventName, default_aggregation: { formula: 'sum' },
    customer_mapping: { type: 'by_id', event_payload_key: 'stripe_customer_id' }, value_settings: { event_payload_key: 'value' },
  });
  const price = await stripe.prices.create({
    currency: 'usd', unit_amount_decimal: Stripe.Decimal.from(unitAmountDecimal), lookup_key: unique('gpu'),
    product_data: { name: 'GPU minutes' }, recurring: { interval: 'month', usage_type: 'metered', meter: meter.id },
  });
  const customer = await stripe.customers.create({ email: `${unique('c')}@example.com`, name: 'Acme' });
  const subscription = await stripe.subscriptions.create({ customer: customer.id, items: [{ price: price.id }] });
  return { eventName, meter, price, customer, subscription };
}

describe('request decoding', () => {
  it('decodes Stripe bracket encoding into objects and arrays', () => {
    expect(parseForm('a[b][c]=x&items[0][price]=p0&items[1][price]=p1&expand[]=e1&expand[]=e2&lookup_keys[0]=k&s=a+b%26')).toEqual({
      a: { b: { c: 'x' } }, items: [{ price: 'p0' }, { price: 'p1' }], expand: ['e1', 'e2'], lookup_keys: ['k'], s: 'a b&',
    });
  });

  it('rounds line amounts half up to the cent in exact decimals', () => {
    expect(lineAmount(30, '0.05')).toBe(2);
    expect(lineAmount(29, '0.05')).toBe(1);
    expect(lineAmount(3, '2000')).toBe(6000);
    expect(lineAmount(1_000_000_007, '0.000000000001')).toBe(0);
  });
});

describe('customers and catalogue', () => {
  it('replays a POST for the same idempotency key and refuses it for another body', async () => {
    const email = `${unique('idem')}@example.com`;
    const first = await stripe.customers.create({ email, metadata: { tenant: 't1' } }, { idempotencyKey: 'k-customer' });
    const again = await stripe.customers.create({ email, metadata: { tenant: 't1' } }, { idempotencyKey: 'k-customer' });
    expect(again.id).toBe(first.id);
    expect(again.lastResponse.headers['idempotent-replayed']).toBe('true');
    await expect(stripe.customers.create({ email: 'other@example.com' }, { idempotencyKey: 'k-customer' }))
      .rejects.toBeInstanceOf(Stripe.errors.StripeIdempotencyError);
    expect((await stripe.customers.list({ email })).data.map((c) => c.id)).toEqual([first.id]);
  });

  it('retrieves, updates (merging metadata), lists and searches customers', async () => {
    const c = await stripe.customers.create({ name: 'Before', metadata: { tenant: 'tn1', plan: 'free' } });
    expect(c.id).toMatch(/^cus_/);
    expect(c.object).toBe('customer');
    const updated = await stripe.customers.update(c.id, { name: 'After', metadata: { plan: '', region: 'eu' } });
    expect(updated.name).toBe('After');
    expect(updated.metadata).toEqual({ tenant: 'tn1', region: 'eu' });
    expect((await stripe.customers.retrieve(c.id)).id).toBe(c.id);
    const found = await stripe.customers.search({ query: "metadata['tenant']:'tn1'" });
    expect(found.data.map((x) => x.id)).toEqual([c.id]);
    await expect(stripe.customers.retrieve('cus_missing')).rejects.toMatchObject({ type: 'StripeInvalidRequestError', code: 'resource_missing', statusCode: 404 });
  });

  it('creates meters, metered prices and looks prices up by lookup key', async () => {
    const { meter, price } = await meteredCustomer();
    expect(meter.id).toMatch(/^mtr_/);
    expect(price).toMatchObject({ object: 'price', type: 'recurring', unit_amount: null, recurring: { usage_type: 'metered', meter: meter.id } });
    expect(price.unit_amount_decimal?.toString()).toBe('0.5');
    const listed = await stripe.prices.list({ lookup_keys: [price.lookup_key as string], expand: ['data.product'] });
    expect(listed.data.map((p) => p.id)).toEqual([price.id]);
    expect((listed.data[0].product as Stripe.Product).name).toBe('GPU minutes');
    await expect(stripe.billing.meters.create({ display_name: 'dup', event_name: meter.event_name, default_aggregation: { formula: 'sum' } }))
      .rejects.toMatchObject({ statusCode: 400, param: 'event_name' });
    await expect(stripe.prices.create({ currency: 'usd', unit_amount: 1, product: price.product as string, recurring: { interval: 'month', usage_type: 'metered' } }))
      .rejects.toMatchObject({ param: 'recurring[meter]' });
    await expect(stripe.prices.create({ currency: 'usd', unit_amount: 1, product: price.product as string, lookup_key: price.lookup_key as string }))
      .rejects.toMatchObject({ param: 'lookup_key' });
  });

  it('refuses unknown parameters the way Stripe does', async () => {
    await expect(stripe.customers.create({ emial: 'x' } as Stripe.CustomerCreateParams)).rejects.toMatchObject({ statusCode: 400, param: 'emial' });
  });
});

describe('meter events', () => {
  it('records v1 events, deduplicates identifiers and refuses bad events', async () => {
    const { eventName, meter, customer } = await meteredCustomer();
    const send = (value: string, identifier: string, extra: Partial<Stripe.Billing.MeterEventCreateParams> = {}) =>
      stripe.billing.meterEvents.create({ event_name: eventName, identifier, payload: { stripe_customer_id: customer.id, value }, ...extra });

    const ev = await send('60', 'ev-1');
    expect(ev).toMatchObject({ object: 'billing.meter_event', identifier: 'ev-1', payload: { value: '60' } });
    await send('30', 'ev-2');
    expect(fake.meterTotal(meter.id, customer.id)).toBe(90);

    const duplicate = await send('60', 'ev-1').catch((e: unknown) => e);
    expect(duplicate).toBeInstanceOf(Stripe.errors.StripeInvalidRequestError);
    expect(duplicate).toMatchObject({ code: 'resource_already_exists', param: 'identifier', headers: { 'stripe-should-retry': 'false' } });
    expect(fake.meterTotal(eventName, customer.id)).toBe(90);

    await expect(send('1.5', 'ev-3')).rejects.toMatchObject({ code: 'meter_event_invalid_value' });
    await expect(send('-1', 'ev-4')).rejects.toMatchObject({ code: 'meter_event_invalid_value' });
    await expect(send('1', 'ev-5', { event_name: unique('nope') })).rejects.toMatchObject({ code: 'no_meter' });
    await expect(send('1', 'ev-6', { payload: { stripe_customer_id: 'cus_nobody', value: '1' } })).rejects.toMatchObject({ code: 'meter_event_customer_not_found' });
    await expect(send('1', 'ev-7', { timestamp: Math.floor(Date.now() / 1000) - 36 * 86_400 })).rejects.toMatchObject({ code: 'timestamp_too_far_in_past' });
    await expect(send('1', 'ev-8', { timestamp: Math.floor(Date.now() / 1000) + 600 })).rejects.toMatchObject({ code: 'timestamp_in_future' });
    expect(fake.meterTotal(meter.id, customer.id)).toBe(90);
    expect(fake.state.meterEvents.filter((e) => e.meterId === meter.id)).toHaveLength(2);
  });

  it('accepts v2 events and the session-authenticated stream, which drops bad events silently', async () => {
    const { eventName, meter, customer } = await meteredCustomer();
    const single = await stripe.v2.billing.meterEvents.create({ event_name: eventName, identifier: 'v2-1', payload: { stripe_customer_id: customer.id, value: '5' } });
    expect(single).toMatchObject({ object: 'v2.billing.meter_event', identifier: 'v2-1' });
    await expect(stripe.v2.billing.meterEvents.create({ event_name: eventName, payload: { stripe_customer_id: customer.id, value: '0.5' } }))
      .rejects.toMatchObject({ code: 'meter_event_invalid_value' });

    const session = await stripe.v2.billing.meterEventSession.create();
    expect(new Date(session.expires_at).getTime() - Date.now()).toBeGreaterThan(14 * 60_000);
    const events = Array.from({ length: 100 }, (_, i) => ({
      event_name: eventName, identifier: `stream-${i % 50}`, payload: { stripe_customer_id: customer.id, value: '2' },
    }));
    events[0] = { ...events[0], identifier: 'stream-bad', payload: { stripe_customer_id: customer.id, value: '2.5' } };
    await stripe.v2.billing.meterEventStream.create({ events }, { apiKey: session.authentication_token });
    // 99 valid events over 50 identifiers: 50 accepted (value 2 each), 49 dropped as duplicates.
    expect(fake.meterTotal(meter.id, customer.id)).toBe(5 + 50 * 2);
    expect(fake.state.meterEventErrors.filter((e) => e.via === 'v2_stream' && e.eventName === eventName).map((e) => e.code).sort())
      .toEqual([...Array(49).fill('duplicate_identifier'), 'meter_event_invalid_value']);
    const streamed = fake.requests.filter((r) => r.path === '/v2/billing/meter_event_stream');
    expect(streamed.at(-1)).toMatchObject({ status: 200, headers: { authorization: `Bearer ${session.authentication_token}` } });

    await expect(stripe.v2.billing.meterEventStream.create({ events: events.slice(0, 1) })).rejects.toMatchObject({ statusCode: 401 });
    fake.expireMeterEventSessions();
    await expect(stripe.v2.billing.meterEventStream.create({ events: events.slice(0, 1) }, { apiKey: session.authentication_token }))
      .rejects.toBeInstanceOf(Stripe.errors.TemporarySessionExpiredError);
  });

  it('summarizes deduplicated events over a range and per hour', async () => {
    const { eventName, meter, customer } = await meteredCustomer();
    const hour = Math.floor(Date.now() / 3_600_000) * 3600;
    for (const [i, t] of [hour - 3600 + 10, hour - 3600 + 20, hour + 5].entries()) {
      await stripe.billing.meterEvents.create({ event_name: eventName, identifier: `sum-${i}`, timestamp: t, payload: { stripe_customer_id: customer.id, value: String(10 * (i + 1)) } });
    }
    const whole = await stripe.billing.meters.listEventSummaries(meter.id, { customer: customer.id, start_time: hour - 7200, end_time: hour + 3600 });
    expect(whole.data).toHaveLength(1);
    expect(whole.data[0]).toMatchObject({ object: 'billing.meter_event_summary', aggregated_value: 60, meter: meter.id });
    const hourly = await stripe.billing.meters.listEventSummaries(meter.id, { customer: customer.id, start_time: hour - 7200, end_time: hour + 3600, value_grouping_window: 'hour' });
    expect(hourly.data.map((s) => [s.start_time - hour, s.aggregated_value])).toEqual([[0, 30], [-3600, 30], [-7200, 0]]);
    await expect(stripe.billing.meters.listEventSummaries(meter.id, { customer: customer.id, start_time: hour + 1, end_time: hour + 3600 }))
      .rejects.toMatchObject({ param: 'start_time' });
  });
});

describe('subscriptions and invoices', () => {
  it('previews the current invoice as meter quantity × unit price, rounded to the cent', async () => {
    const { eventName, price, customer, subscription } = await meteredCustomer('0.5');
    expect(subscription).toMatchObject({ object: 'subscription', status: 'active', customer: customer.id });
    const item = subscription.items.data[0];
    expect(item.id).toMatch(/^si_/);
    expect(item.current_period_end - item.current_period_start).toBeGreaterThanOrEqual(28 * 86_400);
    for (const [i, v] of ['1000', '1001'].entries()) {
      await stripe.billing.meterEvents.create({ event_name: eventName, identifier: `inv-${eventName}-${i}`, payload: { stripe_customer_id: customer.id, value: v } });
    }
    const preview = await stripe.invoices.createPreview({ customer: customer.id, subscription: subscription.id });
    expect(preview).toMatchObject({ object: 'invoice', status: 'draft', total: 1001, period_start: item.current_period_start, period_end: item.current_period_end });
    const [line] = preview.lines.data;
    expect(line).toMatchObject({ amount: 1001, quantity: 2001, currency: 'usd', pricing: { price_details: { price: price.id } } });
    expect(line.pricing?.unit_amount_decimal?.toString()).toBe('0.5');
    expect(line.parent?.subscription_item_details?.subscription_item).toBe(item.id);
    expect((await stripe.subscriptions.list({ customer: customer.id })).data.map((s) => s.id)).toEqual([subscription.id]);
  });

  it('lists invoices finalized by the test helper', async () => {
    const { customer } = await meteredCustomer();
    const made = fake.finalizeInvoice(customer.id, { status: 'paid' });
    const listed = await stripe.invoices.list({ customer: customer.id });
    expect(listed.data.map((i) => i.id)).toEqual([made.id]);
    const got = await stripe.invoices.retrieve(made.id);
    expect(got).toMatchObject({ id: expect.stringMatching(/^in_/), status: 'paid', number: expect.stringMatching(/-0001$/), amount_remaining: 0 });
    expect(got.period_end).toBeLessThanOrEqual(Math.floor(Date.now() / 1000));
  });
});

describe('faults, rate limits and auth', () => {
  it('surfaces injected 429 and 500 as the SDK error classes, then recovers', async () => {
    fake.injectFaults({ path: /meter_events/, status: 429, count: 1, retryAfterSeconds: 2 });
    fake.injectFaults({ path: '/v1/customers', method: 'POST', status: 500, count: 1 });
    const rateLimited = await stripe.billing.meterEvents.create({ event_name: 'x', payload: {} }).catch((e: unknown) => e);
    expect(rateLimited).toBeInstanceOf(Stripe.errors.StripeRateLimitError);
    expect((rateLimited as Stripe.errors.StripeError).headers?.['retry-after']).toBe('2');
    await expect(stripe.customers.create({})).rejects.toBeInstanceOf(Stripe.errors.StripeAPIError);
    await expect(stripe.customers.create({})).resolves.toMatchObject({ object: 'customer' });
  });

  it('replays a request whose answer was lost when the SDK retries it with the same key', async () => {
    const email = `${unique('lost')}@example.com`;
    fake.injectFaults({ path: '/v1/customers', method: 'POST', mode: 'lost_response', count: 1 });
    await stripe.customers.create({ email });
    const posts = fake.requests.filter((r) => r.path === '/v1/customers' && r.body.email === email);
    expect(posts.map((r) => r.fault)).toEqual(['lost_response', undefined]);
    expect(posts[1].idempotencyKey).toBe(posts[0].idempotencyKey);
    expect([...fake.state.customers.values()].filter((c) => c.email === email)).toHaveLength(1);
  });

  it('draws probabilistic faults from a seeded RNG, so runs repeat', () => {
    const pattern = (): boolean[] => {
      const faults = new Faults();
      faults.add({ probability: 0.3, seed: 42 });
      return Array.from({ length: 200 }, () => faults.take('POST', '/v1/billing/meter_events') !== undefined);
    };
    const first = pattern();
    expect(pattern()).toEqual(first);
    expect(first.filter(Boolean).length).toBeGreaterThan(40);
    expect(first.filter(Boolean).length).toBeLessThan(80);
  });

  it('times out when a fault holds the request', async () => {
    fake.injectFaults({ path: '/v1/customers', mode: 'timeout', count: 1 });
    await expect(fake.client(undefined, { timeout: 200 }).customers.list()).rejects.toBeInstanceOf(Stripe.errors.StripeConnectionError);
  });

  it('limits meter event requests to the configured rate', async () => {
    const limited = await startFakeStripe({ meterEventRateLimitPerSecond: 5 });
    try {
      const client = limited.client();
      const meter = await client.billing.meters.create({ display_name: 'm', event_name: 'm', default_aggregation: { formula: 'sum' } });
      const customer = await client.customers.create({});
      const started = Date.now();
      const results = await Promise.allSettled(Array.from({ length: 20 }, (_, i) =>
        client.billing.meterEvents.create({ event_name: meter.event_name, identifier: `rl-${i}`, payload: { stripe_customer_id: customer.id, value: '1' } })));
      const refused = results.filter((r) => r.status === 'rejected');
      // A burst of 5, then 5 more per second that passed.
      expect(20 - refused.length).toBeLessThanOrEqual(5 + Math.ceil(((Date.now() - started) / 1000) * 5));
      for (const r of refused) expect((r as PromiseRejectedResult).reason).toBeInstanceOf(Stripe.errors.StripeRateLimitError);
      expect(limited.meterTotal(meter.id, customer.id)).toBe(20 - refused.length);
    } finally {
      await limited.close();
    }
  });

  it('wants an sk_ key and answers unknown URLs with 404', async () => {
    const bare = await fetch(`${fake.url}/v1/customers`);
    expect(bare.status).toBe(401);
    expect(((await bare.json()) as { error: { type: string } }).error.type).toBe('invalid_request_error');
    await expect(fake.client('pk_test_nope').customers.list()).rejects.toBeInstanceOf(Stripe.errors.StripeAuthenticationError);
    const unknown = await fetch(`${fake.url}/v1/charges/ch_1`, { headers: { Authorization: 'Bearer sk_test_x' } });
    expect(unknown.status).toBe(404);
    expect(fake.requests.at(-1)).toMatchObject({ path: '/v1/charges/ch_1', status: 404 });
  });
});

describe('webhooks', () => {
  it('signs payloads that the SDK verifies', () => {
    const payload = JSON.stringify({ id: 'evt_1', object: 'event', type: 'invoice.paid', data: { object: {} } });
    const event = stripe.webhooks.constructEvent(payload, signPayload(payload, 'whsec_test'), 'whsec_test');
    expect(event.id).toBe('evt_1');
    expect(() => stripe.webhooks.constructEvent(payload, signPayload(payload, 'whsec_other'), 'whsec_test')).toThrow(Stripe.errors.StripeSignatureVerificationError);
  });

  it('delivers signed events to the configured URL', async () => {
    const received: Stripe.Event[] = [];
    const receiver = createServer((req, res) => {
      let raw = '';
      req.on('data', (c: Buffer) => (raw += c.toString('utf8')));
      req.on('end', () => {
        received.push(stripe.webhooks.constructEvent(raw, req.headers['stripe-signature'] as string, fake.webhookSecret));
        res.end('{"received":true}');
      });
    });
    await new Promise<void>((resolve) => receiver.listen(0, '127.0.0.1', resolve));
    try {
      fake.webhookUrl = `http://127.0.0.1:${(receiver.address() as AddressInfo).port}/webhooks/stripe`;
      const reply = await fake.emitWebhook('invoice.paid', { id: 'in_123', object: 'invoice' });
      expect(reply).toEqual({ status: 200, body: '{"received":true}' });
      expect(received[0]).toMatchObject({ type: 'invoice.paid', data: { object: { id: 'in_123' } } });
      expect((await stripe.events.retrieve(received[0].id)).type).toBe('invoice.paid');
    } finally {
      receiver.close();
    }
  });
});
