import type { MigrationInterface, QueryRunner } from 'typeorm';

/**
 * `billing_period_start(anchor, at)`: the start of the monthly billing period holding `at`, as
 * Stripe counts periods from a subscription's billing anchor: anchor + n months, on the anchor's
 * day or the month's last day when it has fewer, in UTC; the anchor itself for `at` before it.
 * The meter reporter moves usage whose period has closed (its invoice finalized) into the open
 * period, where an invoice will still carry it.
 */
export class BillingPeriodStart1764001500000 implements MigrationInterface {
  name = 'BillingPeriodStart1764001500000';

  async up(q: QueryRunner): Promise<void> {
    await q.query(`
      CREATE FUNCTION billing_period_start(anchor timestamptz, at timestamptz) RETURNS timestamptz
        LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
          SELECT CASE WHEN at <= anchor THEN anchor ELSE (
            SELECT max(p) FROM (
              SELECT ((anchor AT TIME ZONE 'UTC') + make_interval(months => n)) AT TIME ZONE 'UTC' AS p
                FROM generate_series(greatest(0, m - 1), m) AS n
            ) c WHERE p <= at) END
            FROM (SELECT ((extract(year FROM at AT TIME ZONE 'UTC') - extract(year FROM anchor AT TIME ZONE 'UTC')) * 12
                          + extract(month FROM at AT TIME ZONE 'UTC') - extract(month FROM anchor AT TIME ZONE 'UTC'))::int AS m) months
        $$`);
  }

  async down(q: QueryRunner): Promise<void> {
    await q.query(`DROP FUNCTION billing_period_start(timestamptz, timestamptz)`);
  }
}
