import { RefreshingCache } from '../../platform/cache';
import type { Database } from '../../platform/db/database';
import { run, statement } from '../../platform/db/sql';
import { AppError, ErrorCode } from '../../platform/errors';
import type { AdmissionGuard, NewJob } from '../compute/jobs.service';
import { MS_PER_MINUTE, PICO, formatDecimal, roundCents } from './money';
import type { PriceBook, Query, SubscribedPrices } from './price-book';

/** The spend-limit period: the calendar month (UTC) holding `at`, keyed "2026-11". */
export function periodOf(at: Date): { key: string; start: Date; end: Date } {
  const start = new Date(Date.UTC(at.getUTCFullYear(), at.getUTCMonth(), 1));
  const end = new Date(Date.UTC(at.getUTCFullYear(), at.getUTCMonth() + 1, 1));
  return { key: start.toISOString().slice(0, 7), start, end };
}

/**
 * Billable ledger cost of the current UTC month per tenant, in exact pico-cents, at the prices
 * the tenant's subscription carries (PriceBook.priceFor): read from the ledger's month totals
 * (migration UsageMonthTotals), a few rows per tenant however long the month.
 */
export async function periodCosts(query: Query, prices: PriceBook, tenantIds: string[]): Promise<Map<string, bigint>> {
  const rows: Array<{ tenant_id: string; job_kind: string; hardware: string; ms: string; subscribed_prices: SubscribedPrices }> = await query(
    `SELECT m.tenant_id, m.job_kind, m.hardware, m.billable_ms::text AS ms, t.subscribed_prices
       FROM usage_month_totals m JOIN tenants t ON t.id = m.tenant_id
      WHERE m.tenant_id = ANY($1::uuid[]) AND m.month = date_trunc('month', now(), 'UTC')`,
    [tenantIds],
  );
  const out = new Map<string, bigint>();
  for (const r of rows) {
    const price = await prices.priceFor(r.subscribed_prices, r.job_kind, r.hardware);
    out.set(r.tenant_id, (out.get(r.tenant_id) ?? 0n) + BigInt(r.ms) * price.perMsPico);
  }
  return out;
}

/** The most a job can cost the tenant: its maxSeconds (or one minute) on each of its devices. */
export async function maxJobCost(prices: PriceBook, job: Pick<NewJob, 'kind' | 'hardware' | 'devices' | 'maxSeconds'>, subscribed: SubscribedPrices): Promise<bigint> {
  const price = await prices.priceFor(subscribed, job.kind, job.hardware);
  const ms = job.maxSeconds ? BigInt(Math.ceil(job.maxSeconds * 1000)) : MS_PER_MINUTE;
  return BigInt(job.devices) * ms * price.perMsPico;
}

const dollars = (pico: bigint) => `$${formatDecimal(BigInt(roundCents(pico)), 2)}`;

interface GuardRow {
  status: string;
  spend_limit_cents: number | null;
  past_due_since: Date | null;
  subscribed_prices: SubscribedPrices;
}

const GUARD_CACHE_MS = 1000;
/** One round trip (migration AuthLookup): nimbus_tenant sets the RLS tenant itself. */
const GUARD_ROW = statement('billing.guard-row', 'SELECT status, spend_limit_cents, past_due_since, subscribed_prices FROM nimbus_tenant($1)');

/**
 * Admission checks of billing, run before a job (prediction, training, trial) is accepted:
 * PAYMENT_REQUIRED once a PAST_DUE tenant's grace period is over, SPEND_LIMIT_REACHED when this
 * month's ledger cost plus the job's maximum cost would pass the tenant's spend limit.
 * The tenant's billing state is cached for a second (this process forgets it at once when it
 * changes it: webhooks, setSpendLimit); the month's cost is read fresh whenever a limit is set.
 */
export class BillingGuard {
  private readonly cache = new RefreshingCache<string, { row: GuardRow | undefined }>({ ttlMs: GUARD_CACHE_MS });

  constructor(private readonly db: Database, private readonly prices: PriceBook, private readonly graceSeconds: number) {}

  forget(tenantId: string): void {
    this.cache.forget(tenantId);
  }

  readonly check: AdmissionGuard = async (tenantId, job) => {
    const tenant = await this.row(tenantId);
    if (!tenant) return;
    if (tenant.status === 'PAST_DUE' && tenant.past_due_since && Date.now() - tenant.past_due_since.getTime() >= this.graceSeconds * 1000) {
      throw new AppError(ErrorCode.PAYMENT_REQUIRED, 'Payment for this account is overdue: new jobs are paused until the open invoice is paid');
    }
    if (tenant.spend_limit_cents === null) return;
    const costs = await periodCosts((sql, params) => this.db.tenantQuery(tenantId, sql, params ?? []), this.prices, [tenantId]);
    const cost = costs.get(tenantId) ?? 0n;
    const max = await maxJobCost(this.prices, job, tenant.subscribed_prices);
    const limit = BigInt(tenant.spend_limit_cents) * PICO;
    if (cost + max > limit) {
      throw new AppError(
        ErrorCode.SPEND_LIMIT_REACHED,
        `This month's spend limit of ${dollars(limit)} would be passed: ${dollars(cost)} used, this job may cost up to ${dollars(max)}`,
        { spendLimitCents: tenant.spend_limit_cents, periodCostCents: roundCents(cost) },
      );
    }
  };

  private async row(tenantId: string): Promise<GuardRow | undefined> {
    const hit = await this.cache.get(tenantId, async () => {
      const [row] = await run<GuardRow>(this.db.pool, GUARD_ROW, [tenantId]);
      return { row };
    });
    return hit?.row;
  }
}
