import type { MigrationInterface, QueryRunner } from 'typeorm';
import { enableTenantRls } from './rls';

/**
 * Datasets (uploads and immutable versions), the model registry and deployments. Training jobs
 * and their trials are rows of `jobs` (kinds TRAINING and TRIAL): the training spec is the parent's
 * input, each trial's spec its input, so they share the job lifecycle, the ledger and webhooks.
 */
export class Training1764000300000 implements MigrationInterface {
  name = 'Training1764000300000';

  async up(q: QueryRunner): Promise<void> {
    await q.query(`
      CREATE TABLE datasets (
        id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
        tenant_id uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
        name text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
        format text NOT NULL CHECK (format IN ('CSV','JSONL')),
        created_at timestamptz NOT NULL DEFAULT now()
      );
      CREATE INDEX datasets_tenant_created_idx ON datasets (tenant_id, created_at DESC, id DESC);

      CREATE TABLE dataset_versions (
        id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
        dataset_id uuid NOT NULL REFERENCES datasets(id) ON DELETE CASCADE,
        tenant_id uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
        version int NOT NULL CHECK (version >= 1),
        content_hash text NOT NULL,
        row_count int NOT NULL,
        size_bytes bigint NOT NULL,
        columns jsonb NOT NULL,
        storage_key text NOT NULL,
        created_at timestamptz NOT NULL DEFAULT now(),
        UNIQUE (dataset_id, content_hash),
        UNIQUE (dataset_id, version)
      );
      CREATE INDEX dataset_versions_tenant_idx ON dataset_versions (tenant_id);

      CREATE TABLE uploads (
        id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
        tenant_id uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
        dataset_id uuid NOT NULL REFERENCES datasets(id) ON DELETE CASCADE,
        format text NOT NULL CHECK (format IN ('CSV','JSONL')),
        max_bytes bigint NOT NULL,
        expires_at timestamptz NOT NULL,
        used_at timestamptz,
        size_bytes bigint,
        storage_key text NOT NULL,
        dataset_version_id uuid REFERENCES dataset_versions(id) ON DELETE SET NULL,
        created_at timestamptz NOT NULL DEFAULT now()
      );
      CREATE INDEX uploads_dataset_idx ON uploads (dataset_id);

      CREATE TABLE models (
        id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
        tenant_id uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
        name text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
        task text NOT NULL CHECK (task IN ('TABULAR_CLASSIFICATION','TABULAR_REGRESSION','TEXT_CLASSIFICATION','FORECASTING')),
        created_at timestamptz NOT NULL DEFAULT now(),
        UNIQUE (tenant_id, name)
      );
      CREATE INDEX models_tenant_created_idx ON models (tenant_id, created_at DESC, id DESC);

      CREATE TABLE model_versions (
        id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
        model_id uuid NOT NULL REFERENCES models(id) ON DELETE CASCADE,
        tenant_id uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
        version int NOT NULL CHECK (version >= 1),
        algorithm text NOT NULL,
        metrics jsonb NOT NULL,
        hyperparameters jsonb NOT NULL,
        artifact_key text NOT NULL,
        dataset_version_id uuid REFERENCES dataset_versions(id) ON DELETE SET NULL,
        transforms jsonb NOT NULL DEFAULT '[]',
        feature_schema jsonb NOT NULL,
        training_job_id uuid REFERENCES jobs(id) ON DELETE SET NULL,
        created_at timestamptz NOT NULL DEFAULT now(),
        UNIQUE (model_id, version),
        UNIQUE (training_job_id)
      );
      CREATE INDEX model_versions_tenant_idx ON model_versions (tenant_id);

      CREATE TABLE deployments (
        id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
        tenant_id uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
        name text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
        model_version_id uuid NOT NULL REFERENCES model_versions(id),
        hardware text NOT NULL CHECK (hardware IN ('CPU','GPU')),
        status text NOT NULL DEFAULT 'READY' CHECK (status IN ('READY')),
        created_at timestamptz NOT NULL DEFAULT now(),
        updated_at timestamptz NOT NULL DEFAULT now(),
        UNIQUE (tenant_id, name)
      );
      CREATE INDEX deployments_tenant_created_idx ON deployments (tenant_id, created_at DESC, id DESC);

      CREATE INDEX jobs_training_running_idx ON jobs (created_at) WHERE kind = 'TRAINING' AND status = 'RUNNING';
    `);
    for (const t of ['datasets', 'dataset_versions', 'models', 'model_versions', 'deployments']) await enableTenantRls(q, t);
    // A signed upload URL names only the upload: its row is found by id before the tenant is known
    // (the signature proves the URL was issued by us); writes still need the tenant's setting.
    await enableTenantRls(q, 'uploads', `OR id = nullif(current_setting('app.upload_id', true), '')::uuid`);
  }

  async down(q: QueryRunner): Promise<void> {
    await q.query(`DROP INDEX IF EXISTS jobs_training_running_idx`);
    await q.query(`DROP TABLE deployments, model_versions, models, uploads, dataset_versions, datasets CASCADE`);
  }
}
