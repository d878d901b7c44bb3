import type { MigrationInterface, QueryRunner } from 'typeorm';

/** `webhookDeliveries` lists a tenant's delivery attempts newest first (per job it uses webhook_deliveries_job_idx). */
export class WebhookDeliveriesIndex1764000800000 implements MigrationInterface {
  name = 'WebhookDeliveriesIndex1764000800000';

  async up(q: QueryRunner): Promise<void> {
    await q.query(`CREATE INDEX webhook_deliveries_tenant_idx ON webhook_deliveries (tenant_id, created_at DESC, id DESC)`);
  }

  async down(q: QueryRunner): Promise<void> {
    await q.query(`DROP INDEX webhook_deliveries_tenant_idx`);
  }
}
