import type { MigrationInterface, QueryRunner } from 'typeorm';
import { enableTenantRls } from './rls';

/**
 * Billing: the price book, the Stripe objects we own, per-tenant Stripe ids and spend limits, the
 * meter-report outbox, processed Stripe events and spend notifications.
 */
export class Billing1764000200000 implements MigrationInterface {
  name = 'Billing1764000200000';

  async up(q: QueryRunner): Promise<void> {
    await q.query(`
      -- Cents per usage minute (device-minute) for each (job kind, hardware class); TRIAL jobs bill as TRAINING.
      -- Meters count device-milliseconds and Stripe takes at most 12 decimals in unit_amount_decimal, so a
      -- price must divide exactly into 60000 parts of 10^-12 cent (see README "Billing").
      CREATE TABLE price_book (
        job_kind text NOT NULL CHECK (job_kind IN ('PREDICTION','TRAINING')),
        hardware text NOT NULL CHECK (hardware IN ('CPU','GPU')),
        unit_amount_cents_per_minute numeric(14,6) NOT NULL
          CHECK (unit_amount_cents_per_minute >= 0 AND mod(unit_amount_cents_per_minute * 1000000000000, 60000) = 0),
        updated_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (job_kind, hardware)
      );
      INSERT INTO price_book (job_kind, hardware, unit_amount_cents_per_minute) VALUES
        ('PREDICTION','CPU', 1.2), ('PREDICTION','GPU', 18), ('TRAINING','CPU', 2.4), ('TRAINING','GPU', 24);

      -- Platform-owned: the Billing Meter and metered Price of each (job kind, hardware) in Stripe.
      CREATE TABLE billing_meters (
        job_kind text NOT NULL,
        hardware text NOT NULL,
        event_name text NOT NULL UNIQUE,
        stripe_meter_id text NOT NULL,
        stripe_price_id text NOT NULL,
        unit_amount_decimal text NOT NULL,
        updated_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (job_kind, hardware)
      );

      ALTER TABLE tenants
        ADD COLUMN stripe_customer_id text UNIQUE,
        ADD COLUMN stripe_subscription_id text,
        ADD COLUMN stripe_billing_anchor timestamptz,
        ADD COLUMN spend_limit_cents int CHECK (spend_limit_cents >= 0),
        ADD COLUMN billing_status_at timestamptz,
        ADD COLUMN past_due_since timestamptz;

      -- The outbox: one row per meter event; its id is the event's Stripe identifier (resends deduplicate).
      CREATE TABLE meter_reports (
        id uuid PRIMARY KEY,
        tenant_id uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
        job_kind text NOT NULL,
        hardware text NOT NULL,
        value bigint NOT NULL CHECK (value >= 0),
        window_start timestamptz NOT NULL,
        status text NOT NULL CHECK (status IN ('PENDING','SENT')),
        attempts int NOT NULL DEFAULT 0,
        last_error text,
        next_attempt_at timestamptz NOT NULL DEFAULT now(),
        created_at timestamptz NOT NULL DEFAULT now(),
        sent_at timestamptz
      );
      CREATE INDEX meter_reports_pending_idx ON meter_reports (window_start) WHERE status = 'PENDING';
      CREATE INDEX meter_reports_tenant_idx ON meter_reports (tenant_id, window_start);

      ALTER TABLE usage_ledger ADD COLUMN report_id uuid REFERENCES meter_reports(id) ON DELETE SET NULL;
      CREATE INDEX usage_ledger_report_idx ON usage_ledger (report_id) WHERE report_id IS NOT NULL;
      CREATE INDEX usage_ledger_unclaimed_idx ON usage_ledger (created_at) WHERE billable AND report_id IS NULL;

      CREATE TABLE stripe_events (
        id text PRIMARY KEY,
        type text NOT NULL,
        created timestamptz NOT NULL,
        processed_at timestamptz
      );

      CREATE TABLE billing_notifications (
        tenant_id uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
        period text NOT NULL,
        threshold int NOT NULL,
        created_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (tenant_id, period, threshold)
      );

      -- The meter-event window of a ledger row: windows of \`seconds\` aligned on the tenant's billing
      -- anchor, so a window never straddles two billing periods (usage before the anchor counts at it).
      CREATE FUNCTION billing_window(ended timestamptz, anchor timestamptz, seconds int) RETURNS timestamptz
        LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
          SELECT CASE WHEN ended <= anchor THEN anchor
                      ELSE anchor + make_interval(secs => floor(extract(epoch FROM ended - anchor)::float8 / seconds) * seconds) END
        $$;
    `);
    for (const t of ['meter_reports', 'billing_notifications']) await enableTenantRls(q, t);
  }

  async down(q: QueryRunner): Promise<void> {
    await q.query(`
      DROP FUNCTION billing_window(timestamptz, timestamptz, int);
      ALTER TABLE usage_ledger DROP COLUMN report_id;
      DROP TABLE billing_notifications, stripe_events, meter_reports, billing_meters, price_book;
      ALTER TABLE tenants DROP COLUMN stripe_customer_id, DROP COLUMN stripe_subscription_id, DROP COLUMN stripe_billing_anchor,
        DROP COLUMN spend_limit_cents, DROP COLUMN billing_status_at, DROP COLUMN past_due_since;
    `);
  }
}
