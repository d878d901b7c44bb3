import type { MigrationInterface, QueryRunner } from 'typeorm';

/**
 * Job creation in one round trip. `nimbus_insert_jobs` sets the RLS tenant for its own
 * transaction and inserts a batch of jobs, so the API's hot write is a single autocommit
 * statement instead of BEGIN / set_config / INSERT / COMMIT. It runs with the caller's rights
 * (SECURITY INVOKER, the default): the insert stays under the jobs table's RLS policies.
 * `p_durable = false` commits without waiting for the WAL flush: only for jobs whose creator is
 * still waiting for them (see JobInserter), whose id nobody has been told yet.
 */
export class JobInsert1764000400000 implements MigrationInterface {
  name = 'JobInsert1764000400000';

  async up(q: QueryRunner): Promise<void> {
    await q.query(`
      CREATE FUNCTION nimbus_insert_jobs(
        p_tenant uuid, p_durable boolean, p_id uuid[], p_kind text[], p_service text[], p_parent uuid[], p_hardware text[],
        p_devices int[], p_input jsonb[], p_idem text[], p_url text[], p_events text[], p_deadline int[], p_attempts int[]
      ) RETURNS SETOF jobs LANGUAGE plpgsql AS $$
      BEGIN
        PERFORM set_config('app.tenant_id', p_tenant::text, true);
        IF NOT p_durable THEN
          PERFORM set_config('synchronous_commit', 'off', true);
        END IF;
        RETURN QUERY
          INSERT INTO jobs (id, tenant_id, kind, service, parent_id, status, hardware, devices, input, idempotency_key,
                            webhook_url, webhook_events, deadline_at, max_attempts)
          SELECT t.id, p_tenant, t.kind, t.service, t.parent_id, 'QUEUED', t.hardware, t.devices, t.input, t.idem, t.url,
                 COALESCE(string_to_array(NULLIF(t.events, ''), ','), '{}'),
                 CASE WHEN t.deadline IS NULL THEN NULL ELSE now() + make_interval(secs => t.deadline) END, t.attempts
            FROM unnest(p_id, p_kind, p_service, p_parent, p_hardware, p_devices, p_input, p_idem, p_url, p_events, p_deadline, p_attempts)
              WITH ORDINALITY AS t(id, kind, service, parent_id, hardware, devices, input, idem, url, events, deadline, attempts, n)
           ORDER BY t.n
          ON CONFLICT (tenant_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
          RETURNING jobs.*;
      END $$;
    `);
  }

  async down(q: QueryRunner): Promise<void> {
    await q.query(`DROP FUNCTION nimbus_insert_jobs`);
  }
}
