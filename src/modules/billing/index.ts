import type { Logger } from 'pino';
import type { Env } from '../../config/env';
import type { Database } from '../../platform/db/database';
import type { TenancyService } from '../tenancy/tenancy.service';
import { BillingService } from './billing.service';
import { PriceBook } from './price-book';
import { BillingGuard } from './spend';
import { StripeAccounts, StripeCatalog } from './stripe-setup';
import { createStripeClient, stripeSettings } from './stripe-gateway';

export { BillingService } from './billing.service';
export { PriceBook } from './price-book';
export { startBillingWorker, type BillingWorker } from './billing-worker';

/**
 * Billing as the API uses it: the price book (also `services { pricing }`), the admission guard
 * (payment status, spend limit), and the bill views and Stripe webhooks, with Stripe when configured.
 */
export function createBilling(env: Env, db: Database, tenancy: TenancyService, log: Logger) {
  const prices = new PriceBook((sql, params) => db.dataSource.query(sql, params));
  const settings = stripeSettings(env);
  // Requests made while a client waits: a shorter timeout than the control plane's.
  const stripe = settings ? createStripeClient(settings, { timeoutMs: 10_000 }) : null;
  const catalog = stripe ? new StripeCatalog(stripe, (sql, params) => db.dataSource.query(sql, params), prices, log) : null;
  const accounts = stripe && catalog
    ? new StripeAccounts(stripe, catalog, (tenantId, fn) => db.tenant(tenantId, (m) => fn((sql, params) => m.query(sql, params))))
    : null;
  const guard = new BillingGuard(db, prices, env.BILLING_GRACE_SECONDS);
  const service = new BillingService({
    db, prices, tenancy, log, stripe, accounts, webhookSecret: settings?.webhookSecret, changed: (tenantId) => guard.forget(tenantId),
  });
  tenancy.onTenantCreated((tenant) => service.onTenantCreated(tenant));
  return { prices, service, guard: guard.check };
}
