import { randomBytes } from 'node:crypto';
import type { Client } from 'pg';
import { signPayload, type FakeStripe } from '../../src/modules/billing/fake-stripe';
import { signUpTenant, startTestApi, type TestApi, type TestTenant } from '../support/api';
import { ownerClient } from '../support/db';
import { PREDICT } from '../support/gql';
import { startFake, stripeEnv } from './support';

let fake: FakeStripe;
let api: TestApi;
let owner: Client;
let hookUrl: string;

beforeAll(async () => {
  fake = await startFake();
  api = await startTestApi(stripeEnv(fake, { BILLING_GRACE_SECONDS: '0' }));
  owner = await ownerClient();
  hookUrl = api.server.url.replace(/\/graphql$/, '/webhooks/stripe');
  fake.webhookUrl = hookUrl;
});
afterAll(async () => {
  await owner.end();
  await api.close();
  await fake.close();
});

async function tenantWithCustomer(name: string): Promise<TestTenant & { customerId: string }> {
  const t = await signUpTenant(api, name);
  const { rows: [row] } = await owner.query('SELECT stripe_customer_id FROM tenants WHERE id = $1', [t.tenantId]);
  expect(row.stripe_customer_id).toMatch(/^cus_/);
  return { ...t, customerId: row.stripe_customer_id };
}

const tenantRow = async (id: string) =>
  (await owner.query('SELECT status, past_due_since, billing_status_at FROM tenants WHERE id = $1', [id])).rows[0];

function invoiceEvent(type: string, customerId: string, created = Math.floor(Date.now() / 1000)) {
  return {
    id: `evt_${randomBytes(12).toString('hex')}`, object: 'event', type, created, api_version: '2025-11-17.clover', livemode: false,
    pending_webhooks: 1, request: { id: null, idempotency_key: null },
    data: { object: { id: `in_${randomBytes(8).toString('hex')}`, object: 'invoice', customer: customerId, status: type === 'invoice.paid' ? 'paid' : 'open' } },
  };
}

async function deliver(event: object, secret = fake.webhookSecret, signatureFor?: string) {
  const payload = JSON.stringify(event);
  const res = await fetch(hookUrl, {
    method: 'POST', body: payload,
    headers: { 'content-type': 'application/json; charset=utf-8', 'stripe-signature': signPayload(signatureFor ?? payload, secret) },
  });
  return { status: res.status, body: (await res.json()) as { outcome?: string; error?: string } };
}

const echo = { input: { service: 'system.echo', input: { message: 'hi' }, wait: 0 } };

describe('POST /webhooks/stripe', () => {
  it('refuses a bad signature with 400 and changes nothing', async () => {
    const t = await tenantWithCustomer('Sig');
    const event = invoiceEvent('invoice.payment_failed', t.customerId);
    expect((await deliver(event, 'whsec_someone_else')).status).toBe(400);
    expect((await deliver(event, fake.webhookSecret, JSON.stringify({ ...event, type: 'invoice.paid' }))).status).toBe(400);
    const unsigned = await fetch(hookUrl, { method: 'POST', body: JSON.stringify(event), headers: { 'content-type': 'application/json' } });
    expect(unsigned.status).toBe(400);
    expect(await tenantRow(t.tenantId)).toMatchObject({ status: 'ACTIVE', past_due_since: null, billing_status_at: null });
    expect((await owner.query('SELECT 1 FROM stripe_events WHERE id = $1', [event.id])).rowCount).toBe(0);
  });

  it('handles the same event once, however often it is delivered', async () => {
    const t = await tenantWithCustomer('Twice');
    const event = invoiceEvent('invoice.payment_failed', t.customerId);
    const replies = await Promise.all([deliver(event), deliver(event)]);
    expect(replies.map((r) => r.status)).toEqual([200, 200]);
    expect(replies.map((r) => r.body.outcome).sort()).toEqual(['applied', 'duplicate']);
    expect((await deliver(event)).body.outcome).toBe('duplicate');
    const { rows } = await owner.query(`SELECT data FROM audit_events WHERE tenant_id = $1 AND action = 'billing.status_changed'`, [t.tenantId]);
    expect(rows).toEqual([{ data: expect.objectContaining({ stripeEventId: event.id, to: 'PAST_DUE' }) }]);
    expect((await owner.query('SELECT processed_at FROM stripe_events WHERE id = $1', [event.id])).rows[0].processed_at).toBeInstanceOf(Date);
  });

  it('is out-of-order safe: an older invoice.paid arriving after a newer payment_failed leaves the tenant PAST_DUE', async () => {
    const t = await tenantWithCustomer('Order');
    const now = Math.floor(Date.now() / 1000);
    expect((await deliver(invoiceEvent('invoice.payment_failed', t.customerId, now))).body.outcome).toBe('applied');
    expect((await deliver(invoiceEvent('invoice.paid', t.customerId, now - 60))).body.outcome).toBe('stale');
    expect((await tenantRow(t.tenantId)).status).toBe('PAST_DUE');
    expect((await deliver(invoiceEvent('invoice.paid', t.customerId, now + 1))).body.outcome).toBe('applied');
    expect(await tenantRow(t.tenantId)).toMatchObject({ status: 'ACTIVE', past_due_since: null });
  });

  it('payment_failed then paid: PAST_DUE refuses new jobs with PAYMENT_REQUIRED (grace 0) while reads work, then ACTIVE again', async () => {
    const t = await tenantWithCustomer('Payer');
    expect((await api.gql(PREDICT, echo, t.token)).data.predict.status).toBe('QUEUED');

    const failed = await fake.emitWebhook('invoice.payment_failed', { id: 'in_failed_1', object: 'invoice', customer: t.customerId, status: 'open' });
    expect(failed.status).toBe(200);
    const row = await tenantRow(t.tenantId);
    expect(row.status).toBe('PAST_DUE');
    expect(row.past_due_since).toBeInstanceOf(Date);
    const refused = await api.gql(PREDICT, echo, t.token);
    expect(refused.errors?.[0]?.extensions?.code).toBe('PAYMENT_REQUIRED');
    const me = await api.gql('{ me { tenant { id status } } }', {}, t.token);
    expect(me.data.me.tenant).toEqual({ id: t.tenantId, status: 'PAST_DUE' });
    expect((await api.gql('{ predictions(first: 5) { edges { node { id status } } } }', {}, t.token)).data.predictions.edges).toHaveLength(1);

    // A second failure keeps the first past-due time.
    await fake.emitWebhook('invoice.payment_failed', { id: 'in_failed_2', object: 'invoice', customer: t.customerId, status: 'open' });
    expect((await tenantRow(t.tenantId)).past_due_since).toEqual(row.past_due_since);

    expect((await fake.emitWebhook('invoice.paid', { id: 'in_failed_1', object: 'invoice', customer: t.customerId, status: 'paid' })).status).toBe(200);
    expect(await tenantRow(t.tenantId)).toMatchObject({ status: 'ACTIVE', past_due_since: null });
    expect((await api.gql(PREDICT, echo, t.token)).data.predict.status).toBe('QUEUED');
  });

  it('lets a PAST_DUE tenant keep starting jobs during the grace period', async () => {
    const lenient = await startTestApi(stripeEnv(fake, { BILLING_GRACE_SECONDS: '3600' }));
    try {
      const t = await tenantWithCustomer('Grace');
      await deliver(invoiceEvent('invoice.payment_failed', t.customerId));
      expect((await tenantRow(t.tenantId)).status).toBe('PAST_DUE');
      expect((await lenient.gql(PREDICT, echo, t.token)).data.predict.status).toBe('QUEUED');
      expect((await api.gql(PREDICT, echo, t.token)).errors?.[0]?.extensions?.code).toBe('PAYMENT_REQUIRED');
    } finally {
      await lenient.close();
    }
  });

  it('runs the grace period from the failure, not from a late delivery of its event', async () => {
    const lenient = await startTestApi(stripeEnv(fake, { BILLING_GRACE_SECONDS: '3600' }));
    try {
      const t = await tenantWithCustomer('Late failure');
      // Stripe retried the payment_failed webhook for two hours before it got through.
      const failedAt = Math.floor(Date.now() / 1000) - 7200;
      expect((await deliver(invoiceEvent('invoice.payment_failed', t.customerId, failedAt))).body.outcome).toBe('applied');
      const row = await tenantRow(t.tenantId);
      expect(row.status).toBe('PAST_DUE');
      expect(row.past_due_since.getTime()).toBe(failedAt * 1000);
      // An hour's grace from the failure is over: no new jobs, even on the lenient API.
      expect((await lenient.gql(PREDICT, echo, t.token)).errors?.[0]?.extensions?.code).toBe('PAYMENT_REQUIRED');
    } finally {
      await lenient.close();
    }
  });

  it('stays PAST_DUE when one invoice is paid while another\'s failed payment is still open, and is ACTIVE once that one is paid too', async () => {
    const t = await tenantWithCustomer('Two invoices');
    // Stripe holds an open invoice whose payment failed...
    const failed = fake.finalizeInvoice(t.customerId, { status: 'open' });
    Object.assign(failed, { attempted: true, attempt_count: 1 });
    const at = Math.floor(Date.now() / 1000);
    const failure = invoiceEvent('invoice.payment_failed', t.customerId, at - 10);
    failure.data.object.id = failed.id;
    expect((await deliver(failure)).body.outcome).toBe('applied');
    // ...when another (older) invoice's payment goes through.
    const otherPaid = invoiceEvent('invoice.paid', t.customerId, at - 5);
    expect((await deliver(otherPaid)).body.outcome).toBe('still_past_due');
    expect((await tenantRow(t.tenantId)).status).toBe('PAST_DUE');
    // The failed one is paid: nothing is owed any more.
    Object.assign(failed, { status: 'paid', amount_remaining: 0 });
    const paid = invoiceEvent('invoice.paid', t.customerId, at);
    paid.data.object.id = failed.id;
    expect((await deliver(paid)).body.outcome).toBe('applied');
    expect(await tenantRow(t.tenantId)).toMatchObject({ status: 'ACTIVE', past_due_since: null });
  });

  it('acknowledges events it does not act on and events for unknown customers', async () => {
    expect((await deliver(invoiceEvent('invoice.paid', 'cus_nobody'))).body.outcome).toBe('unknown_customer');
    expect((await deliver({ ...invoiceEvent('customer.created', 'cus_x'), data: { object: { id: 'cus_x', object: 'customer' } } })).body.outcome).toBe('ignored');
  });
});
