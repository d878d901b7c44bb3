import type { MigrationInterface, QueryRunner } from 'typeorm';

/**
 * An idempotency key reused with a different request is refused (CONFLICT) instead of answered
 * with the key's earlier job: `jobs.request_hash` holds the fingerprint of the request that
 * created the job (`src/modules/compute/request-fingerprint.ts`), set only for jobs created with
 * an idempotency key. Rows from before have NULL, which matches any request.
 * `nimbus_insert_jobs` (migration JobInsert) takes one more array, the hashes; otherwise it is
 * unchanged (RLS tenant set inside, non-durable commit on request, ON CONFLICT on the idempotency
 * index). The old signature is dropped, so API processes from before this migration cannot insert
 * jobs once it has committed: deploy the API with it.
 */
export class RequestHash1764001300000 implements MigrationInterface {
  name = 'RequestHash1764001300000';

  async up(q: QueryRunner): Promise<void> {
    // No default: adding the column rewrites nothing.
    await q.query(`ALTER TABLE jobs ADD COLUMN request_hash text`);
    await q.query(`DROP FUNCTION nimbus_insert_jobs(uuid, boolean, uuid[], text[], text[], uuid[], text[], int[], jsonb[], text[], text[], text[], int[], int[])`);
    await q.query(`
      CREATE FUNCTION nimbus_insert_jobs(
        p_tenant uuid, p_durable boolean, p_id uuid[], p_kind text[], p_service text[], p_parent uuid[], p_hardware text[],
        p_devices int[], p_input jsonb[], p_idem text[], p_url text[], p_events text[], p_deadline int[], p_attempts int[], p_hash text[]
      ) RETURNS SETOF jobs LANGUAGE plpgsql AS $$
      BEGIN
        PERFORM set_config('app.tenant_id', p_tenant::text, true);
        IF NOT p_durable THEN
          PERFORM set_config('synchronous_commit', 'off', true);
        END IF;
        RETURN QUERY
          INSERT INTO jobs (id, tenant_id, kind, service, parent_id, status, hardware, devices, input, idempotency_key,
                            webhook_url, webhook_events, deadline_at, max_attempts, request_hash)
          SELECT t.id, p_tenant, t.kind, t.service, t.parent_id, 'QUEUED', t.hardware, t.devices, t.input, t.idem, t.url,
                 COALESCE(string_to_array(NULLIF(t.events, ''), ','), '{}'),
                 CASE WHEN t.deadline IS NULL THEN NULL ELSE now() + make_interval(secs => t.deadline) END, t.attempts, t.hash
            FROM unnest(p_id, p_kind, p_service, p_parent, p_hardware, p_devices, p_input, p_idem, p_url, p_events, p_deadline, p_attempts, p_hash)
              WITH ORDINALITY AS t(id, kind, service, parent_id, hardware, devices, input, idem, url, events, deadline, attempts, hash, n)
           ORDER BY t.n
          ON CONFLICT (tenant_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
          RETURNING jobs.*;
      END $$;
    `);
  }

  async down(q: QueryRunner): Promise<void> {
    await q.query(`DROP FUNCTION nimbus_insert_jobs(uuid, boolean, uuid[], text[], text[], uuid[], text[], int[], jsonb[], text[], text[], text[], int[], int[], text[])`);
    await q.query(`ALTER TABLE jobs DROP COLUMN request_hash`);
    // As migration JobInsert created it.
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
}
