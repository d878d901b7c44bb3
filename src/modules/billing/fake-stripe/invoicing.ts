import { invalid, newId, Reader } from './codec';
import type { InvoiceObj, LineItemObj, PriceObj, SubscriptionItemObj, SubscriptionObj } from './objects';
import type { Metering } from './metering';
import { Store } from './store';

/**
 * `quantity × unit_amount_decimal` in whole cents, rounded half up per line as Stripe does
 * (0.05 ¢ × 30 = 1.5 ¢ → 2 ¢), in exact decimal arithmetic.
 */
export function lineAmount(quantity: number, unitAmountDecimal: string): number {
  const [whole, frac = ''] = unitAmountDecimal.split('.');
  const scale = 10n ** BigInt(frac.length);
  const product = BigInt(quantity) * BigInt(whole + frac);
  return Number((2n * product + scale) / (2n * scale));
}

/** "0.5" (cents) → "$0.005", as Stripe writes unit prices in line descriptions. */
function dollars(unitAmountDecimal: string): string {
  const [whole, frac = ''] = unitAmountDecimal.split('.');
  const cents = whole.padStart(3, '0');
  const decimals = `${cents.slice(-2)}${frac}`.replace(/0+$/, '').padEnd(2, '0');
  return `$${Number(cents.slice(0, -2))}.${decimals}`;
}

export interface FinalizeOptions {
  /** 'open' (finalized, unpaid) by default. */
  status?: 'open' | 'paid';
  /** The billed period; the subscription's previous period by default. */
  period?: { start: Date; end: Date };
}

/** Invoice previews and finalized invoices computed from the subscription items and the accepted meter events. */
export class Invoicing {
  constructor(private readonly store: Store, private readonly metering: Metering) {}

  /**
   * `POST /v1/invoices/create_preview`: what the subscription's next invoice holds now. Metered items are billed
   * in arrears for the current period (quantity = the meter's aggregate for the customer), licensed items in
   * advance for the next one.
   */
  preview(r: Reader): InvoiceObj {
    r.only(['customer', 'subscription', 'automatic_tax', 'currency', 'preview_mode']);
    const customerId = r.str('customer');
    const subscriptionId = r.str('subscription');
    let sub: SubscriptionObj;
    if (subscriptionId) {
      sub = this.store.subscription(subscriptionId, 'subscription');
      if (customerId && sub.customer !== customerId) throw invalid(`The subscription ${sub.id} does not belong to customer ${customerId}.`, 'subscription');
    } else if (customerId) {
      this.store.customer(customerId);
      const active = this.store.subscriptions((s) => s.customer === customerId && s.status === 'active');
      if (active.length === 0) throw invalid(`No upcoming invoices for customer: ${customerId}`, undefined, 'invoice_upcoming_none');
      if (active.length > 1) throw invalid('The customer has several subscriptions: pass `subscription`.', 'subscription');
      sub = active[0];
    } else {
      throw invalid('Missing required param: customer or subscription.', 'customer', 'parameter_missing');
    }
    if (sub.status !== 'active') throw invalid(`No upcoming invoices for subscription: ${sub.id}`, undefined, 'invoice_upcoming_none');
    const first = sub.items.data[0];
    const period = this.store.currentPeriod(sub, first);
    const id = newId('upcoming_in', 24);
    const lines = sub.items.data.map((item) => {
      const metered = item.price.recurring?.usage_type === 'metered';
      return this.line(id, sub, item, metered ? this.store.currentPeriod(sub, item) : this.store.currentPeriod(sub, item, 1), 'il_tmp');
    });
    return this.invoice(id, sub, lines, period, { status: 'draft', billing_reason: 'upcoming', number: null, created: this.store.now() });
  }

  /** Test helper: a finalized invoice for a closed period, so invoice lists have content. */
  finalize(customerId: string, options: FinalizeOptions = {}): InvoiceObj {
    const customer = this.store.customer(customerId);
    const [sub] = this.store.subscriptions((s) => s.customer === customerId);
    if (!sub) throw new Error(`fake-stripe: customer ${customerId} has no subscription to invoice`);
    const previous = this.store.currentPeriod(sub, sub.items.data[0], -1);
    const period = options.period
      ? { start: Math.floor(options.period.start.getTime() / 1000), end: Math.floor(options.period.end.getTime() / 1000) }
      : previous;
    const id = newId('in', 24);
    const lines = sub.items.data.map((item) => this.line(id, sub, item, period, 'il'));
    const status = options.status ?? 'open';
    const now = this.store.now();
    const invoice = this.invoice(id, sub, lines, period, {
      status, billing_reason: 'subscription_cycle', created: Math.min(now, period.end),
      number: `${customer.invoice_prefix}-${String(customer.next_invoice_sequence++).padStart(4, '0')}`,
      hosted_invoice_url: `https://invoice.stripe.com/i/acct_fake/${id}`, invoice_pdf: `https://pay.stripe.com/invoice/acct_fake/${id}/pdf`,
      status_transitions: { finalized_at: now, paid_at: status === 'paid' ? now : null, marked_uncollectible_at: null, voided_at: null },
      attempted: status === 'paid', attempt_count: status === 'paid' ? 1 : 0, auto_advance: status !== 'paid',
    });
    if (status === 'paid') Object.assign(invoice, { amount_paid: invoice.total, amount_remaining: 0 });
    this.store.state.invoices.set(id, invoice);
    return invoice;
  }

  private line(invoiceId: string, sub: SubscriptionObj, item: SubscriptionItemObj, period: { start: number; end: number }, prefix: string): LineItemObj {
    const price = item.price as PriceObj & { recurring: NonNullable<PriceObj['recurring']> };
    const meterId = price.recurring.meter;
    const quantity = meterId
      ? this.metering.aggregate(this.store.meter(meterId), sub.customer, period.start, period.end)
      : (item.quantity ?? 1);
    const amount = lineAmount(quantity, price.unit_amount_decimal);
    const productName = this.store.state.products.get(price.product)?.name ?? price.product;
    return this.store.fixtures.build('line_item', {
      id: newId(prefix, 24), object: 'line_item' as const, invoice: invoiceId, livemode: false, metadata: {},
      amount, subtotal: amount, currency: price.currency, quantity, quantity_decimal: String(quantity),
      description: `${quantity} × ${productName} (at ${dollars(price.unit_amount_decimal)} / ${price.recurring.interval})`,
      period, discountable: true, subscription: sub.id,
      pricing: { type: 'price_details', price_details: { price: price.id, product: price.product }, unit_amount_decimal: price.unit_amount_decimal },
      parent: {
        type: 'subscription_item_details', invoice_item_details: null,
        subscription_item_details: { invoice_item: null, proration: false, proration_details: { credited_items: null }, subscription: sub.id, subscription_item: item.id },
      },
    });
  }

  private invoice(id: string, sub: SubscriptionObj, lines: LineItemObj[], period: { start: number; end: number }, extra: Partial<InvoiceObj> & { status: InvoiceObj['status']; created: number; number: string | null }): InvoiceObj {
    const customer = this.store.customer(sub.customer);
    const total = lines.reduce((sum, l) => sum + l.amount, 0);
    return this.store.fixtures.build('invoice', {
      id, object: 'invoice' as const, customer: customer.id, customer_email: customer.email, customer_name: customer.name,
      currency: sub.currency, livemode: false, metadata: {}, period_start: period.start, period_end: period.end,
      subtotal: total, subtotal_excluding_tax: total, total, total_excluding_tax: total, total_taxes: [],
      amount_due: total, amount_paid: 0, amount_remaining: total, collection_method: 'charge_automatically',
      hosted_invoice_url: null, invoice_pdf: null, account_name: 'Nimbus (fake Stripe)',
      status_transitions: { finalized_at: null, paid_at: null, marked_uncollectible_at: null, voided_at: null },
      parent: { type: 'subscription_details', quote_details: null, subscription_details: { subscription: sub.id, metadata: sub.metadata } },
      lines: { object: 'list' as const, data: lines, has_more: false, total_count: lines.length, url: `/v1/invoices/${id}/lines` },
      ...extra,
    });
  }
}
