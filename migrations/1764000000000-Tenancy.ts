import type { MigrationInterface, QueryRunner } from 'typeorm';
import { enableTenantRls } from './rls';

export class Tenancy1764000000000 implements MigrationInterface {
  name = 'Tenancy1764000000000';

  async up(q: QueryRunner): Promise<void> {
    await q.query(`
      CREATE TABLE tenants (
        id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
        name text NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
        slug text NOT NULL UNIQUE,
        status text NOT NULL DEFAULT 'ACTIVE' CHECK (status IN ('ACTIVE','PAST_DUE','SUSPENDED')),
        plan text NOT NULL DEFAULT 'STANDARD' CHECK (plan IN ('FREE','STANDARD','ENTERPRISE')),
        webhook_url text,
        webhook_secret text NOT NULL,
        created_at timestamptz NOT NULL DEFAULT now()
      );
      CREATE TABLE users (
        id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
        email text NOT NULL UNIQUE CHECK (email = lower(email)),
        password_hash text NOT NULL,
        created_at timestamptz NOT NULL DEFAULT now()
      );
      CREATE TABLE memberships (
        id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
        tenant_id uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
        user_id uuid NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        role text NOT NULL CHECK (role IN ('OWNER','ADMIN','MEMBER','BILLING')),
        created_at timestamptz NOT NULL DEFAULT now(),
        UNIQUE (tenant_id, user_id)
      );
      CREATE INDEX memberships_user_idx ON memberships (user_id);
      CREATE TABLE api_keys (
        id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
        tenant_id uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
        name text NOT NULL,
        prefix text NOT NULL UNIQUE,
        secret_hash text NOT NULL,
        scopes text[] NOT NULL,
        created_by uuid REFERENCES users(id) ON DELETE SET NULL,
        last_used_at timestamptz,
        revoked_at timestamptz,
        created_at timestamptz NOT NULL DEFAULT now()
      );
      CREATE INDEX api_keys_tenant_created_idx ON api_keys (tenant_id, created_at DESC, id DESC);
      CREATE TABLE audit_events (
        id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
        tenant_id uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
        actor_type text NOT NULL,
        actor_id uuid,
        action text NOT NULL,
        object_type text NOT NULL,
        object_id text NOT NULL,
        data jsonb NOT NULL DEFAULT '{}',
        request_id text,
        created_at timestamptz NOT NULL DEFAULT now()
      );
      CREATE INDEX audit_events_tenant_created_idx ON audit_events (tenant_id, created_at DESC);
    `);
    // Tenants: a tenant sees its own row; operators (a flag set only by operator-checked code) see all.
    await q.query(`
      ALTER TABLE tenants ENABLE ROW LEVEL SECURITY;
      CREATE POLICY tenant_self ON tenants
        USING (id = nullif(current_setting('app.tenant_id', true), '')::uuid
               OR current_setting('app.operator', true) = 'on')
        WITH CHECK (id = nullif(current_setting('app.tenant_id', true), '')::uuid);
    `);
    await enableTenantRls(q, 'audit_events');
    // A user logging in (identity proven by password) may read their own memberships across tenants.
    await enableTenantRls(q, 'memberships', `OR user_id = nullif(current_setting('app.user_id', true), '')::uuid`);
    // An API key is found by its public prefix before the tenant is known; only that one row shows.
    await enableTenantRls(q, 'api_keys', `OR prefix = nullif(current_setting('app.api_key_prefix', true), '')`);
  }

  async down(q: QueryRunner): Promise<void> {
    await q.query(`DROP TABLE audit_events, api_keys, memberships, users, tenants CASCADE`);
  }
}
