import type { MigrationInterface, QueryRunner } from 'typeorm';

/**
 * The reconciler's webhook sweep reads the jobs with a webhook URL that ended in a time window
 * (to enqueue terminal webhooks whose announcement was lost); only such jobs are in this index.
 */
export class WebhookSweepIndex1764000700000 implements MigrationInterface {
  name = 'WebhookSweepIndex1764000700000';

  async up(q: QueryRunner): Promise<void> {
    await q.query(`CREATE INDEX jobs_webhook_completed_idx ON jobs (completed_at) WHERE webhook_url IS NOT NULL`);
  }

  async down(q: QueryRunner): Promise<void> {
    await q.query(`DROP INDEX jobs_webhook_completed_idx`);
  }
}
