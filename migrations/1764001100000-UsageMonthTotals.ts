import type { MigrationInterface, QueryRunner } from 'typeorm';
import { enableTenantRls } from './rls';

/**
 * Month-to-date billable usage per tenant, kept with the ledger: the spend-limit check runs on
 * every job a tenant with a limit submits, and summing its month of `usage_ledger` rows there cost
 * ~25 ms at 110k rows and grows with the month (it would be seconds for a busy tenant by the 30th).
 *
 * `usage_month_totals` holds, per tenant, UTC month (of the attempt's end), job kind and hardware,
 * the billable milliseconds of the ledger: a statement-level trigger adds each INSERT's billable
 * rows (transition table, so a batch of 500 ends is one upsert per group, in key order so that
 * concurrent writers lock them alike). Ledger rows are never updated in what it sums (only their
 * report columns change) nor deleted but with their tenant, whose totals go with it. The trigger
 * function runs as its owner (SECURITY DEFINER): whoever may insert into the ledger keeps its total.
 */
export class UsageMonthTotals1764001100000 implements MigrationInterface {
  name = 'UsageMonthTotals1764001100000';

  async up(q: QueryRunner): Promise<void> {
    await q.query(`
      CREATE TABLE usage_month_totals (
        tenant_id uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
        month timestamptz NOT NULL,
        job_kind text NOT NULL,
        hardware text NOT NULL,
        billable_ms bigint NOT NULL CHECK (billable_ms >= 0),
        PRIMARY KEY (tenant_id, month, job_kind, hardware)
      )
    `);
    await enableTenantRls(q, 'usage_month_totals');
    await q.query(`
      CREATE FUNCTION nimbus_add_usage_month_totals() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
      BEGIN
        INSERT INTO usage_month_totals AS t (tenant_id, month, job_kind, hardware, billable_ms)
        SELECT tenant_id, date_trunc('month', ended_at, 'UTC'), job_kind, hardware, sum(billable_ms)
          FROM added WHERE billable
         GROUP BY 1, 2, 3, 4
         ORDER BY 1, 2, 3, 4
        ON CONFLICT (tenant_id, month, job_kind, hardware) DO UPDATE SET billable_ms = t.billable_ms + EXCLUDED.billable_ms;
        RETURN NULL;
      END $$
    `);
    await q.query(`
      CREATE TRIGGER usage_ledger_month_totals AFTER INSERT ON usage_ledger
        REFERENCING NEW TABLE AS added FOR EACH STATEMENT EXECUTE FUNCTION nimbus_add_usage_month_totals()
    `);
    // What the ledger holds already.
    await q.query(`
      INSERT INTO usage_month_totals (tenant_id, month, job_kind, hardware, billable_ms)
      SELECT tenant_id, date_trunc('month', ended_at, 'UTC'), job_kind, hardware, sum(billable_ms)
        FROM usage_ledger WHERE billable GROUP BY 1, 2, 3, 4
    `);
  }

  async down(q: QueryRunner): Promise<void> {
    await q.query('DROP TRIGGER usage_ledger_month_totals ON usage_ledger');
    await q.query('DROP FUNCTION nimbus_add_usage_month_totals');
    await q.query('DROP TABLE usage_month_totals');
  }
}
