import type { MigrationInterface, QueryRunner } from 'typeorm';
import { enableTenantRls } from './rls';

export class Compute1764000100000 implements MigrationInterface {
  name = 'Compute1764000100000';

  async up(q: QueryRunner): Promise<void> {
    await q.query(`
      CREATE TABLE jobs (
        id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
        tenant_id uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
        kind text NOT NULL CHECK (kind IN ('PREDICTION','TRAINING','TRIAL')),
        service text NOT NULL,
        parent_id uuid REFERENCES jobs(id) ON DELETE CASCADE,
        status text NOT NULL CHECK (status IN ('QUEUED','ADMITTED','RUNNING','SUCCEEDED','FAILED','CANCELED')),
        hardware text NOT NULL CHECK (hardware IN ('CPU','GPU')),
        devices int NOT NULL CHECK (devices >= 1),
        input jsonb,
        output jsonb,
        error jsonb,
        progress real NOT NULL DEFAULT 0,
        logs text[] NOT NULL DEFAULT '{}',
        node_id text,
        attempt int NOT NULL DEFAULT 0,
        max_attempts int NOT NULL DEFAULT 3,
        borrowed boolean NOT NULL DEFAULT false,
        idempotency_key text,
        webhook_url text,
        webhook_events text[] NOT NULL DEFAULT '{}',
        deadline_at timestamptz,
        metrics jsonb NOT NULL DEFAULT '{}',
        created_at timestamptz NOT NULL DEFAULT now(),
        admitted_at timestamptz,
        started_at timestamptz,
        completed_at timestamptz,
        data_expires_at timestamptz
      );
      CREATE UNIQUE INDEX jobs_idempotency_idx ON jobs (tenant_id, idempotency_key) WHERE idempotency_key IS NOT NULL;
      CREATE INDEX jobs_tenant_created_idx ON jobs (tenant_id, created_at DESC, id DESC);
      CREATE INDEX jobs_active_idx ON jobs (status) WHERE status IN ('QUEUED','ADMITTED','RUNNING');
      CREATE INDEX jobs_parent_idx ON jobs (parent_id) WHERE parent_id IS NOT NULL;
      CREATE INDEX jobs_expiry_idx ON jobs (data_expires_at) WHERE data_expires_at IS NOT NULL;

      CREATE TABLE usage_ledger (
        id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
        tenant_id uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
        job_id uuid NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
        attempt int NOT NULL,
        job_kind text NOT NULL,
        service text NOT NULL,
        hardware text NOT NULL,
        devices int NOT NULL,
        node_id text,
        started_at timestamptz NOT NULL,
        ended_at timestamptz NOT NULL,
        billable_ms bigint NOT NULL CHECK (billable_ms >= 0),
        billable boolean NOT NULL,
        reason text,
        reported_at timestamptz,
        created_at timestamptz NOT NULL DEFAULT now(),
        UNIQUE (job_id, attempt)
      );
      CREATE INDEX usage_ledger_tenant_time_idx ON usage_ledger (tenant_id, ended_at);
      CREATE INDEX usage_ledger_unreported_idx ON usage_ledger (created_at) WHERE billable AND reported_at IS NULL;

      CREATE TABLE nodes (
        id text PRIMARY KEY,
        hardware text NOT NULL CHECK (hardware IN ('CPU','GPU')),
        devices int NOT NULL,
        gpu_model text,
        status text NOT NULL CHECK (status IN ('READY','LOST')),
        last_heartbeat_at timestamptz NOT NULL,
        registered_at timestamptz NOT NULL DEFAULT now()
      );

      CREATE TABLE quotas (
        tenant_id uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
        hardware text NOT NULL CHECK (hardware IN ('CPU','GPU')),
        guaranteed int NOT NULL CHECK (guaranteed >= 0),
        "limit" int NOT NULL,
        PRIMARY KEY (tenant_id, hardware),
        CHECK ("limit" >= guaranteed)
      );

      CREATE TABLE webhook_deliveries (
        id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
        tenant_id uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
        job_id uuid NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
        webhook_id text NOT NULL,
        event_type text NOT NULL,
        url text NOT NULL,
        attempt int NOT NULL,
        status_code int,
        error text,
        delivered boolean NOT NULL,
        created_at timestamptz NOT NULL DEFAULT now()
      );
      CREATE INDEX webhook_deliveries_job_idx ON webhook_deliveries (job_id, created_at);
    `);
    // Operators (a flag set only by operator-checked code) read jobs across tenants for quota usage.
    await enableTenantRls(q, 'jobs', `OR current_setting('app.operator', true) = 'on'`);
    for (const t of ['usage_ledger', 'webhook_deliveries']) await enableTenantRls(q, t);
  }

  async down(q: QueryRunner): Promise<void> {
    await q.query(`DROP TABLE webhook_deliveries, quotas, nodes, usage_ledger, jobs CASCADE`);
  }
}
