import type Stripe from 'stripe';
import { METERS, meterKey, type Query } from './price-book';
import type { StripeCatalog } from './stripe-setup';

export interface ReconcileRow {
  tenantId: string;
  tenantName: string;
  customerId: string | null;
  meter: string;
  /** Billable device-ms in the ledger whose meter event belongs to the period. */
  ledgerMs: bigint;
  /** What Stripe's meter holds for the customer over the period (event summaries). */
  stripeMs: bigint;
  diffMs: bigint;
}

/** The calendar month "2026-11" (UTC) as [start, end). */
export function parsePeriod(period: string): { start: Date; end: Date } {
  const m = /^(\d{4})-(\d{2})$/.exec(period);
  if (!m || Number(m[2]) < 1 || Number(m[2]) > 12) throw new Error(`--period must look like 2026-11, got "${period}"`);
  return { start: new Date(Date.UTC(Number(m[1]), Number(m[2]) - 1, 1)), end: new Date(Date.UTC(Number(m[1]), Number(m[2]), 1)) };
}

/**
 * Ledger vs Stripe per tenant × meter for a period. A ledger row belongs to the period of its meter
 * event's timestamp (its report's window, or the window it will get), which is how Stripe files it.
 * Rows not yet reported show up as differences until they are.
 */
export async function reconcile(opts: { query: Query; stripe: Stripe; catalog: StripeCatalog; start: Date; end: Date; concurrency?: number }): Promise<ReconcileRow[]> {
  const { query, stripe, start, end } = opts;
  const meters = await opts.catalog.meters();
  const ledger: Array<{ tenant_id: string; kind: string; hardware: string; ms: string }> = await query(
    // Reported rows by their report's window (a report may carry usage from long before it: a
    // tenant subscribed late, usage moved out of a closed period); unreported ones by the window
    // they will get, which is near their end.
    `WITH rows AS (
       SELECT l.tenant_id, CASE WHEN l.job_kind = 'PREDICTION' THEN 'PREDICTION' ELSE 'TRAINING' END AS kind, l.hardware, l.billable_ms,
              r.window_start AS ts
         FROM usage_ledger l JOIN tenants t ON t.id = l.tenant_id JOIN meter_reports r ON r.id = l.report_id
        WHERE l.billable AND r.window_start >= $1 AND r.window_start < $2
       UNION ALL
       SELECT l.tenant_id, CASE WHEN l.job_kind = 'PREDICTION' THEN 'PREDICTION' ELSE 'TRAINING' END, l.hardware, l.billable_ms,
              billing_window(l.ended_at, COALESCE(t.stripe_billing_anchor, date_trunc('minute', l.ended_at)), 60)
         FROM usage_ledger l JOIN tenants t ON t.id = l.tenant_id
        WHERE l.billable AND l.report_id IS NULL AND l.ended_at >= $1::timestamptz - interval '40 days' AND l.ended_at < $2::timestamptz + interval '1 hour'
     )
     SELECT tenant_id, kind, hardware, sum(billable_ms)::text AS ms FROM rows WHERE ts >= $1 AND ts < $2
      GROUP BY tenant_id, kind, hardware`,
    [start, end],
  );
  const tenants: Array<{ id: string; name: string; stripe_customer_id: string | null }> = await query(
    `SELECT id, name, stripe_customer_id FROM tenants
      WHERE stripe_customer_id IS NOT NULL OR id = ANY($1::uuid[]) ORDER BY name, id`,
    [[...new Set(ledger.map((r) => r.tenant_id))]],
  );
  const ledgerMs = new Map(ledger.map((r) => [`${r.tenant_id}|${meterKey(r.kind, r.hardware)}`, BigInt(r.ms)]));
  const cells = tenants.flatMap((t) => METERS.map((m) => ({ t, m, key: `${t.id}|${meterKey(m.kind, m.hardware)}` })));
  const stripeMs = new Map<string, bigint>();
  const queue = cells.filter((c) => c.t.stripe_customer_id);
  const worker = async () => {
    for (let c = queue.shift(); c; c = queue.shift()) {
      const meterId = meters.get(meterKey(c.m.kind, c.m.hardware))!.meterId;
      let sum = 0n;
      for await (const s of stripe.billing.meters.listEventSummaries(meterId, {
        customer: c.t.stripe_customer_id!, start_time: start.getTime() / 1000, end_time: end.getTime() / 1000, limit: 100,
      }, { maxNetworkRetries: 3 })) {
        sum += BigInt(Math.round(s.aggregated_value));
      }
      stripeMs.set(c.key, sum);
    }
  };
  await Promise.all(Array.from({ length: opts.concurrency ?? 8 }, worker));
  return cells
    .map(({ t, m, key }) => {
      const l = ledgerMs.get(key) ?? 0n;
      const s = stripeMs.get(key) ?? 0n;
      return { tenantId: t.id, tenantName: t.name, customerId: t.stripe_customer_id, meter: m.eventName, ledgerMs: l, stripeMs: s, diffMs: s - l };
    })
    .filter((r) => r.ledgerMs !== 0n || r.stripeMs !== 0n);
}

/** A plain-text table of the rows, then the differences. */
export function formatReconcile(rows: ReconcileRow[], period: string): string {
  const table = [['tenant', 'customer', 'meter', 'ledger_ms', 'stripe_ms', 'difference_ms'],
    ...rows.map((r) => [`${r.tenantName} (${r.tenantId})`, r.customerId ?? '-', r.meter, String(r.ledgerMs), String(r.stripeMs), String(r.diffMs)])];
  const widths = table[0].map((_, i) => Math.max(...table.map((row) => row[i].length)));
  const lines = table.map((row) => row.map((cell, i) => (i >= 3 ? cell.padStart(widths[i]) : cell.padEnd(widths[i]))).join('  '));
  lines.splice(1, 0, widths.map((w) => '-'.repeat(w)).join('  '));
  const diffs = rows.filter((r) => r.diffMs !== 0n);
  lines.push('', diffs.length === 0
    ? `${period}: ledger and Stripe agree for every tenant and meter (${rows.length} non-zero rows).`
    : `${period}: ${diffs.length} difference(s):\n${diffs.map((r) => `  ${r.tenantName} ${r.meter}: Stripe ${r.stripeMs} ms, ledger ${r.ledgerMs} ms (${r.diffMs > 0n ? '+' : ''}${r.diffMs})`).join('\n')}`);
  return lines.join('\n');
}
