import type { MigrationInterface, QueryRunner } from 'typeorm';

/** Delivery attempts are kept for `webhookDeliveryRetentionSeconds` (30 days); the reconciler finds the expired ones by this index. */
export class WebhookDeliveriesRetention1764000900000 implements MigrationInterface {
  name = 'WebhookDeliveriesRetention1764000900000';

  async up(q: QueryRunner): Promise<void> {
    await q.query(`CREATE INDEX webhook_deliveries_created_idx ON webhook_deliveries (created_at)`);
  }

  async down(q: QueryRunner): Promise<void> {
    await q.query(`DROP INDEX webhook_deliveries_created_idx`);
  }
}
