import type { MigrationInterface, QueryRunner } from 'typeorm';

/**
 * Tenants can now read and rotate their webhook signing secret. The secret a rotation replaces
 * keeps signing (beside the new one) until `webhook_secret_previous_until`, so receivers can move
 * to the new secret without dropping deliveries.
 */
export class WebhookSecretRotation1764000600000 implements MigrationInterface {
  name = 'WebhookSecretRotation1764000600000';

  async up(q: QueryRunner): Promise<void> {
    await q.query(`ALTER TABLE tenants ADD COLUMN webhook_secret_previous text, ADD COLUMN webhook_secret_previous_until timestamptz`);
  }

  async down(q: QueryRunner): Promise<void> {
    await q.query(`ALTER TABLE tenants DROP COLUMN webhook_secret_previous, DROP COLUMN webhook_secret_previous_until`);
  }
}
