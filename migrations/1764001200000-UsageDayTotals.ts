import type { MigrationInterface, QueryRunner } from 'typeorm';
import { enableTenantRls } from './rls';

/**
 * Day totals beside the month totals (migration UsageMonthTotals), for `usage(from, to)`: its
 * whole UTC days are read from `usage_day_totals` (tenant, UTC day of the attempt's end, service,
 * hardware, job kind) and only its partial first and last day from the ledger. Summing the ledger
 * over the range cost 81 ms for 30 days at 128k rows, and a range may span 400 days.
 * The ledger's trigger function now keeps both tables, with the same rules (billable rows only,
 * one upsert per group per statement, in key order).
 */
/** The month totals' part of the trigger function, as migration UsageMonthTotals wrote it. */
const MONTH_UPSERT = `INSERT INTO usage_month_totals AS t (tenant_id, month, job_kind, hardware, billable_ms)
        SELECT tenant_id, date_trunc('month', ended_at, 'UTC'), job_kind, hardware, sum(billable_ms)
          FROM added WHERE billable
         GROUP BY 1, 2, 3, 4
         ORDER BY 1, 2, 3, 4
        ON CONFLICT (tenant_id, month, job_kind, hardware) DO UPDATE SET billable_ms = t.billable_ms + EXCLUDED.billable_ms;`;

export class UsageDayTotals1764001200000 implements MigrationInterface {
  name = 'UsageDayTotals1764001200000';

  async up(q: QueryRunner): Promise<void> {
    // No ledger insert between the backfill's read and the new function (a control plane running
    // through the deploy waits for this migration's commit instead).
    await q.query('LOCK TABLE usage_ledger IN SHARE ROW EXCLUSIVE MODE');
    await q.query(`
      CREATE TABLE usage_day_totals (
        tenant_id uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
        day timestamptz NOT NULL,
        service text NOT NULL,
        hardware text NOT NULL,
        job_kind text NOT NULL,
        billable_ms bigint NOT NULL CHECK (billable_ms >= 0),
        PRIMARY KEY (tenant_id, day, service, hardware, job_kind)
      )
    `);
    await enableTenantRls(q, 'usage_day_totals');
    await q.query(`
      CREATE OR REPLACE FUNCTION nimbus_add_usage_month_totals() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
      BEGIN
        ${MONTH_UPSERT}
        INSERT INTO usage_day_totals AS t (tenant_id, day, service, hardware, job_kind, billable_ms)
        SELECT tenant_id, date_trunc('day', ended_at, 'UTC'), service, hardware, job_kind, sum(billable_ms)
          FROM added WHERE billable
         GROUP BY 1, 2, 3, 4, 5
         ORDER BY 1, 2, 3, 4, 5
        ON CONFLICT (tenant_id, day, service, hardware, job_kind) DO UPDATE SET billable_ms = t.billable_ms + EXCLUDED.billable_ms;
        RETURN NULL;
      END $$
    `);
    // What the ledger holds already (the function above applies to inserts from this transaction on).
    await q.query(`
      INSERT INTO usage_day_totals (tenant_id, day, service, hardware, job_kind, billable_ms)
      SELECT tenant_id, date_trunc('day', ended_at, 'UTC'), service, hardware, job_kind, sum(billable_ms)
        FROM usage_ledger WHERE billable GROUP BY 1, 2, 3, 4, 5
    `);
  }

  async down(q: QueryRunner): Promise<void> {
    await q.query(`
      CREATE OR REPLACE FUNCTION nimbus_add_usage_month_totals() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
      BEGIN
        ${MONTH_UPSERT}
        RETURN NULL;
      END $$
    `);
    await q.query('DROP TABLE usage_day_totals');
  }
}
