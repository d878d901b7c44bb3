import type { MigrationInterface, QueryRunner } from 'typeorm';

/**
 * Jobs ended outside the recorder (canceled by the client or a spend limit, deadline expired,
 * failed after lost nodes, training failures) had no `data_expires_at`, so retention never
 * deleted their inputs and outputs. The reconciler now gives them one; this index keeps finding
 * them cheap (only such rows are in it: the recorder sets the expiry in the same update).
 */
export class RetentionIndex1764000500000 implements MigrationInterface {
  name = 'RetentionIndex1764000500000';

  async up(q: QueryRunner): Promise<void> {
    await q.query(`
      CREATE INDEX jobs_unexpired_idx ON jobs (completed_at)
       WHERE data_expires_at IS NULL AND status IN ('SUCCEEDED','FAILED','CANCELED') AND (input IS NOT NULL OR output IS NOT NULL)
    `);
  }

  async down(q: QueryRunner): Promise<void> {
    await q.query(`DROP INDEX jobs_unexpired_idx`);
  }
}
