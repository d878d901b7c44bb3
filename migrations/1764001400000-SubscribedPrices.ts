import type { MigrationInterface, QueryRunner } from 'typeorm';

/**
 * `tenants.subscribed_prices`: the prices a tenant's Stripe subscription carries, as cents per
 * device-minute by meter ("PREDICTION:CPU" → "1.2"), recorded when the subscription is created.
 * Stripe invoices a subscription at the Prices its items were created with, also after the price
 * book changes (a change makes new Prices, for subscriptions created after it), so usage and spend
 * limits price a tenant's usage at these, never at a later price-book value. NULL: no subscription
 * yet (priced at the price book). Existing subscriptions are taken to carry the price book's
 * current prices: the only prices there have been.
 */
export class SubscribedPrices1764001400000 implements MigrationInterface {
  name = 'SubscribedPrices1764001400000';

  async up(q: QueryRunner): Promise<void> {
    await q.query(`ALTER TABLE tenants ADD COLUMN subscribed_prices jsonb`);
    await q.query(`
      UPDATE tenants SET subscribed_prices = (
        SELECT jsonb_object_agg(job_kind || ':' || hardware, rtrim(rtrim(unit_amount_cents_per_minute::text, '0'), '.')) FROM price_book)
       WHERE stripe_subscription_id IS NOT NULL`);
  }

  async down(q: QueryRunner): Promise<void> {
    await q.query(`ALTER TABLE tenants DROP COLUMN subscribed_prices`);
  }
}
