import Stripe from 'stripe';
import type { Logger } from 'pino';
import type { Database } from '../../platform/db/database';
import { statement } from '../../platform/db/sql';
import { AppError, ErrorCode, badInput, notFound } from '../../platform/errors';
import { actorOf, requireScope } from '../tenancy/principal';
import { audit, type Caller, type TenancyService } from '../tenancy/tenancy.service';
import type { Tenant } from '../tenancy/tenancy.entities';
import { MS_PER_MINUTE, PICO_DIGITS, formatDecimal, money, parseDecimal, roundCents, type Money } from './money';
import { meterKey, type PriceBook, type SubscribedPrices } from './price-book';
import { isMissing } from './stripe-gateway';
import type { StripeAccounts } from './stripe-setup';

export interface UsageRow {
  service: string;
  hardware: string;
  seconds: number;
  minutes: number;
  cost: Money;
}

export interface UsageView {
  totalSeconds: number;
  total: Money;
  rows: UsageRow[];
}

export interface BillLine {
  description: string;
  minutes: number;
  unitAmountCents: string;
  amount: Money;
}

export interface CurrentBillView {
  periodStart: Date;
  periodEnd: Date;
  lines: BillLine[];
  total: Money;
  spendLimit: Money | null;
}

export interface InvoiceView {
  id: string;
  number: string | null;
  status: string | null;
  total: Money;
  periodStart: Date;
  periodEnd: Date;
  hostedInvoiceUrl: string | null;
}

const MAX_USAGE_RANGE_MS = 400 * 86_400_000;
const INVOICE_ID = /^in_[A-Za-z0-9_]{1,200}$/;
/** Stripe reads from request handlers may retry (GETs and previews have no side effects). */
const READ = { maxNetworkRetries: 1 } as const;

export interface BillingDeps {
  db: Database;
  prices: PriceBook;
  tenancy: TenancyService;
  log: Logger;
  /** Null when no Stripe is configured: bills from Stripe answer SERVICE_UNAVAILABLE. */
  stripe: Stripe | null;
  accounts: StripeAccounts | null;
  webhookSecret: string | undefined;
  /** A tenant's billing state (status, spend limit) changed: drop what this process cached of it. */
  changed?: (tenantId: string) => void;
}

/** What tenants see of billing (usage, bill, invoices, spend limit) and Stripe's webhooks. */
export class BillingService {
  constructor(private readonly d: BillingDeps) {}

  /** Tenant-created hook: Stripe customer and subscription now; if Stripe is down, the meter reporter retries. */
  async onTenantCreated(tenant: Pick<Tenant, 'id'>): Promise<void> {
    if (!this.d.accounts) return;
    await this.d.accounts.ensure(tenant.id, { quick: true }).catch((err: Error) =>
      this.d.log.warn({ tenant: tenant.id, err: err.message }, 'Stripe customer not created at sign-up; the meter reporter will retry'));
  }

  /** Usage from the ledger, grouped by service and hardware; `total` is computed per meter as Stripe invoices it. */
  async usage(caller: Caller, from: Date, to: Date): Promise<UsageView> {
    const p = requireScope(caller.principal, 'BILLING');
    if (!(to.getTime() > from.getTime())) throw badInput('to', 'must be after from');
    if (to.getTime() - from.getTime() > MAX_USAGE_RANGE_MS) throw badInput('to', 'the range may span at most 400 days');
    // Whole UTC days from the day totals, the partial first and last day from the ledger itself.
    const { wholeFrom, wholeTo } = wholeDays(from, to);
    const [rows, [tenant]] = await Promise.all([
      this.d.db.tenantQuery<{ service: string; hardware: string; job_kind: string; ms: string }>(p.tenantId, USAGE, [p.tenantId, from, to, wholeFrom, wholeTo]),
      // Priced as Stripe invoices it: at the prices the tenant's subscription carries.
      this.d.db.tenantQuery<{ subscribed_prices: SubscribedPrices }>(p.tenantId, SUBSCRIBED_PRICES, [p.tenantId]),
    ]);
    const groups = new Map<string, { service: string; hardware: string; ms: bigint; pico: bigint }>();
    const meters = new Map<string, bigint>();
    let totalMs = 0n;
    for (const r of rows) {
      const ms = BigInt(r.ms);
      const pico = ms * (await this.d.prices.priceFor(tenant?.subscribed_prices, r.job_kind, r.hardware)).perMsPico;
      const key = `${r.service}\u0000${r.hardware}`;
      const g = groups.get(key) ?? { service: r.service, hardware: r.hardware, ms: 0n, pico: 0n };
      g.ms += ms;
      g.pico += pico;
      groups.set(key, g);
      meters.set(meterKey(r.job_kind, r.hardware), (meters.get(meterKey(r.job_kind, r.hardware)) ?? 0n) + pico);
      totalMs += ms;
    }
    const total = [...meters.values()].reduce((sum, pico) => sum + roundCents(pico), 0);
    return {
      totalSeconds: Number(totalMs) / 1000,
      total: money(total),
      rows: [...groups.values()]
        .sort((a, b) => a.service.localeCompare(b.service) || a.hardware.localeCompare(b.hardware))
        .map((g) => ({ service: g.service, hardware: g.hardware, seconds: Number(g.ms) / 1000, minutes: Number(g.ms) / 60_000, cost: money(roundCents(g.pico)) })),
    };
  }

  /** The open period as Stripe will invoice it (invoice preview of the tenant's subscription). */
  async currentBill(caller: Caller): Promise<CurrentBillView> {
    const p = requireScope(caller.principal, 'BILLING');
    const stripe = this.stripe();
    const account = await this.account(p.tenantId, true);
    const preview = await this.call(() => stripe.invoices.createPreview({ customer: account.customerId!, subscription: account.subscriptionId! }, READ));
    return {
      periodStart: new Date(preview.period_start * 1000),
      periodEnd: new Date(preview.period_end * 1000),
      lines: preview.lines.data.map((l) => ({
        description: l.description ?? '',
        minutes: (l.quantity ?? 0) / Number(MS_PER_MINUTE),
        unitAmountCents: perMinute(l.pricing?.unit_amount_decimal?.toString() ?? '0'),
        amount: money(l.amount),
      })),
      total: money(preview.total),
      spendLimit: account.spendLimitCents === null ? null : money(account.spendLimitCents),
    };
  }

  async invoices(caller: Caller): Promise<InvoiceView[]> {
    const p = requireScope(caller.principal, 'BILLING');
    const stripe = this.stripe();
    const { customerId } = await this.account(p.tenantId, false);
    if (!customerId) return [];
    const list = await this.call(() => stripe.invoices.list({ customer: customerId, limit: 100 }, READ));
    return list.data.map(toInvoiceView);
  }

  /** One invoice of the caller's; another customer's invoice is NOT_FOUND, like a missing one. */
  async invoice(caller: Caller, id: string): Promise<InvoiceView> {
    const p = requireScope(caller.principal, 'BILLING');
    const stripe = this.stripe();
    if (!INVOICE_ID.test(id)) throw notFound('Invoice');
    const { customerId } = await this.account(p.tenantId, false);
    if (!customerId) throw notFound('Invoice');
    const invoice = await this.call(() => stripe.invoices.retrieve(id, {}, READ), () => notFound('Invoice'));
    const owner = typeof invoice.customer === 'string' ? invoice.customer : invoice.customer?.id;
    if (owner !== customerId) throw notFound('Invoice');
    return toInvoiceView(invoice);
  }

  async setSpendLimit(caller: Caller, amountCents: number): Promise<{ spendLimit: Money }> {
    const p = requireScope(caller.principal, 'BILLING');
    if (!Number.isSafeInteger(amountCents) || amountCents < 0 || amountCents > 2_147_483_647) {
      throw badInput('amountCents', 'must be a whole number of cents, 0 or more');
    }
    await this.d.db.tenant(p.tenantId, async (m) => {
      const [before]: Array<{ spend_limit_cents: number | null }> = await m.query(
        'SELECT spend_limit_cents FROM tenants WHERE id = $1 FOR UPDATE', [p.tenantId],
      );
      await m.query('UPDATE tenants SET spend_limit_cents = $2 WHERE id = $1', [p.tenantId, amountCents]);
      await audit(m, p.tenantId, actorOf(p), 'billing.spend_limit_set', 'Tenant', p.tenantId,
        { amountCents, previousCents: before?.spend_limit_cents ?? null }, caller.requestId);
    });
    this.d.changed?.(p.tenantId);
    return { spendLimit: money(amountCents) };
  }

  /**
   * `POST /webhooks/stripe`: verifies the signature on the raw body, then handles each event once
   * (its id is stored in the same transaction as its effect). A payment status change applies only
   * if the event is not older than the last one applied, so late deliveries cannot undo newer ones.
   */
  async handleStripeWebhook(raw: Buffer, signature: string | undefined): Promise<{ status: number; body: object }> {
    if (!this.d.stripe || !this.d.webhookSecret) return { status: 503, body: { error: 'Stripe webhooks are not configured' } };
    let event: Stripe.Event;
    try {
      event = this.d.stripe.webhooks.constructEvent(raw, signature ?? '', this.d.webhookSecret);
    } catch (err) {
      this.d.log.warn({ err: (err as Error).message }, 'Stripe webhook refused: bad signature');
      return { status: 400, body: { error: 'Invalid Stripe signature' } };
    }
    const { outcome, tenantId } = await this.applyEvent(event);
    if (tenantId) {
      this.d.tenancy.forgetTenantProfile(tenantId);
      this.d.changed?.(tenantId);
    }
    this.d.log.info({ event: event.id, type: event.type, outcome }, 'Stripe webhook');
    return { status: 200, body: { received: true, outcome } };
  }

  private async applyEvent(event: Stripe.Event): Promise<{ outcome: string; tenantId?: string }> {
    let status = event.type === 'invoice.payment_failed' ? 'PAST_DUE' : event.type === 'invoice.paid' ? 'ACTIVE' : null;
    const object = event.data.object as { id?: string; customer?: string | { id: string } | null };
    const customer = typeof object.customer === 'string' ? object.customer : object.customer?.id;
    // One invoice paid while another's payment has failed and is still open: the tenant still owes,
    // so it stays PAST_DUE (and its grace period runs on). Asked before the transaction; if Stripe
    // cannot answer, the webhook fails and Stripe delivers it again.
    if (status === 'ACTIVE' && customer && (await this.otherFailedInvoiceOpen(customer, object.id))) status = null;
    // Finding the tenant by its Stripe customer crosses tenants (operator flag); the update is then scoped to it.
    // The grace period runs from the failure (the event's creation), not from its delivery: a webhook
    // Stripe retries for days must not lengthen it.
    return this.d.db.withSettings({ 'app.operator': 'on' }, async (m) => {
      const fresh = await m.query(
        'INSERT INTO stripe_events (id, type, created) VALUES ($1, $2, to_timestamp($3)) ON CONFLICT (id) DO NOTHING RETURNING id',
        [event.id, event.type, event.created],
      );
      if (fresh.length === 0) return { outcome: 'duplicate' };
      let result: { outcome: string; tenantId?: string } = { outcome: event.type === 'invoice.paid' && !status ? 'still_past_due' : 'ignored' };
      if (status && customer) {
        const [tenant]: Array<{ id: string; status: string }> = await m.query('SELECT id, status FROM tenants WHERE stripe_customer_id = $1', [customer]);
        if (!tenant) result = { outcome: 'unknown_customer' };
        else {
          await m.query(`SELECT set_config('app.tenant_id', $1, true)`, [tenant.id]);
          const [changed]: [unknown[], number] = await m.query(
            `UPDATE tenants SET status = $2, billing_status_at = to_timestamp($3),
                    past_due_since = CASE WHEN $2 = 'PAST_DUE' THEN COALESCE(past_due_since, to_timestamp($3)) END
              WHERE id = $1 AND status <> 'SUSPENDED' AND (billing_status_at IS NULL OR billing_status_at <= to_timestamp($3))
              RETURNING id`,
            [tenant.id, status, event.created],
          );
          if (changed.length === 0) result = { outcome: 'stale', tenantId: tenant.id };
          else {
            await audit(m, tenant.id, { actorType: 'SYSTEM', actorId: null }, 'billing.status_changed', 'Tenant', tenant.id,
              { from: tenant.status, to: status, stripeEventId: event.id, stripeEventType: event.type });
            result = { outcome: 'applied', tenantId: tenant.id };
          }
        }
      }
      await m.query('UPDATE stripe_events SET processed_at = now() WHERE id = $1', [event.id]);
      return result;
    });
  }

  /** Whether the customer has an open invoice, other than `paidId`, whose payment was attempted and failed. */
  private async otherFailedInvoiceOpen(customer: string, paidId: string | undefined): Promise<boolean> {
    const stripe = this.d.stripe!;
    for await (const inv of stripe.invoices.list({ customer, status: 'open', limit: 100 }, READ)) {
      if (inv.id !== paidId && inv.attempted) return true;
    }
    return false;
  }

  private stripe(): Stripe {
    if (!this.d.stripe || !this.d.accounts) throw new AppError(ErrorCode.SERVICE_UNAVAILABLE, 'Billing is not configured on this deployment');
    return this.d.stripe;
  }

  /** The tenant's Stripe ids and spend limit; `ensure` creates the customer/subscription if sign-up could not. */
  private async account(tenantId: string, ensure: boolean) {
    const [row]: Array<{ stripe_customer_id: string | null; stripe_subscription_id: string | null; spend_limit_cents: number | null }> =
      await this.d.db.tenant(tenantId, (m) => m.query(
        'SELECT stripe_customer_id, stripe_subscription_id, spend_limit_cents FROM tenants WHERE id = $1', [tenantId],
      ));
    let customerId = row?.stripe_customer_id ?? null;
    let subscriptionId = row?.stripe_subscription_id ?? null;
    if (ensure && (!customerId || !subscriptionId)) {
      const ids = await this.call(() => this.d.accounts!.ensure(tenantId));
      customerId = ids.customerId;
      subscriptionId = ids.subscriptionId;
    }
    return { customerId, subscriptionId, spendLimitCents: row?.spend_limit_cents ?? null };
  }

  /** Stripe failures become SERVICE_UNAVAILABLE (logged), or `missing()` for a 404. */
  private async call<T>(fn: () => Promise<T>, missing?: () => AppError): Promise<T> {
    try {
      return await fn();
    } catch (err) {
      if (err instanceof AppError) throw err;
      if (missing && isMissing(err)) throw missing();
      this.d.log.warn({ err: (err as Error).message }, 'Stripe request failed');
      throw new AppError(ErrorCode.SERVICE_UNAVAILABLE, 'The billing provider is unavailable; try again shortly');
    }
  }
}

/** Cents per minute (decimal string) of a per-millisecond Stripe unit price. */
function perMinute(perMsDecimal: string): string {
  return formatDecimal(parseDecimal(perMsDecimal, PICO_DIGITS) * MS_PER_MINUTE, PICO_DIGITS);
}

function toInvoiceView(inv: Stripe.Invoice): InvoiceView {
  return {
    id: inv.id!, number: inv.number, status: inv.status, total: money(inv.total),
    periodStart: new Date(inv.period_start * 1000), periodEnd: new Date(inv.period_end * 1000),
    hostedInvoiceUrl: inv.hosted_invoice_url ?? null,
  };
}

/** Usage of [$2, $3): whole days [$4, $5) from the day totals, the rest from the ledger. */
const USAGE = statement('billing.usage', `
  SELECT service, hardware, job_kind, sum(ms)::text AS ms FROM (
    SELECT service, hardware, job_kind, billable_ms AS ms FROM usage_day_totals
     WHERE tenant_id = $1 AND day >= $4 AND day < $5
    UNION ALL
    SELECT service, hardware, job_kind, billable_ms FROM usage_ledger
     WHERE tenant_id = $1 AND billable AND ((ended_at >= $2 AND ended_at < $4) OR (ended_at >= $5 AND ended_at < $3))
  ) u GROUP BY service, hardware, job_kind`);

const SUBSCRIBED_PRICES = statement('billing.subscribed-prices', 'SELECT subscribed_prices FROM tenants WHERE id = $1');

const DAY_MS = 86_400_000;

/**
 * The whole UTC days inside [from, to) as [wholeFrom, wholeTo); when there are none, both are `to`
 * (so the ledger covers the whole range and the day totals nothing).
 */
export function wholeDays(from: Date, to: Date): { wholeFrom: Date; wholeTo: Date } {
  const first = Math.ceil(from.getTime() / DAY_MS) * DAY_MS;
  const last = Math.floor(to.getTime() / DAY_MS) * DAY_MS;
  return first < last ? { wholeFrom: new Date(first), wholeTo: new Date(last) } : { wholeFrom: to, wholeTo: to };
}
