import { Column, CreateDateColumn, Entity, PrimaryGeneratedColumn } from 'typeorm';

export const ROLES = ['OWNER', 'ADMIN', 'MEMBER', 'BILLING'] as const;
export type Role = (typeof ROLES)[number];
export const SCOPES = ['PREDICT', 'TRAIN', 'READ', 'BILLING', 'ADMIN'] as const;
export type Scope = (typeof SCOPES)[number];
export const TENANT_STATUSES = ['ACTIVE', 'PAST_DUE', 'SUSPENDED'] as const;
export type TenantStatus = (typeof TENANT_STATUSES)[number];
export const PLANS = ['FREE', 'STANDARD', 'ENTERPRISE'] as const;
export type Plan = (typeof PLANS)[number];

@Entity('tenants')
export class Tenant {
  @PrimaryGeneratedColumn('uuid') id: string;
  @Column('text') name: string;
  @Column('text', { unique: true }) slug: string;
  @Column('text', { default: 'ACTIVE' }) status: TenantStatus;
  @Column('text', { default: 'STANDARD' }) plan: Plan;
  @Column('text', { name: 'webhook_url', nullable: true }) webhookUrl: string | null;
  /** Per-tenant secret for signing outgoing webhooks (Standard Webhooks `whsec_` form). */
  @Column('text', { name: 'webhook_secret' }) webhookSecret: string;
  @CreateDateColumn({ name: 'created_at', type: 'timestamptz' }) createdAt: Date;
}

@Entity('users')
export class User {
  @PrimaryGeneratedColumn('uuid') id: string;
  /** Stored lower-cased; unique across the platform. */
  @Column('text', { unique: true }) email: string;
  @Column('text', { name: 'password_hash' }) passwordHash: string;
  @CreateDateColumn({ name: 'created_at', type: 'timestamptz' }) createdAt: Date;
}

@Entity('memberships')
export class Membership {
  @PrimaryGeneratedColumn('uuid') id: string;
  @Column('uuid', { name: 'tenant_id' }) tenantId: string;
  @Column('uuid', { name: 'user_id' }) userId: string;
  @Column('text') role: Role;
  @CreateDateColumn({ name: 'created_at', type: 'timestamptz' }) createdAt: Date;
}

@Entity('api_keys')
export class ApiKey {
  @PrimaryGeneratedColumn('uuid') id: string;
  @Column('uuid', { name: 'tenant_id' }) tenantId: string;
  @Column('text') name: string;
  /** Public, unique lookup part of the key (`nmb_<prefix>_<secret>`). */
  @Column('text', { unique: true }) prefix: string;
  /** SHA-256 (hex) of the whole key; the secret itself is never stored. */
  @Column('text', { name: 'secret_hash' }) secretHash: string;
  @Column('text', { array: true }) scopes: Scope[];
  @Column('uuid', { name: 'created_by', nullable: true }) createdBy: string | null;
  @Column('timestamptz', { name: 'last_used_at', nullable: true }) lastUsedAt: Date | null;
  @Column('timestamptz', { name: 'revoked_at', nullable: true }) revokedAt: Date | null;
  @CreateDateColumn({ name: 'created_at', type: 'timestamptz' }) createdAt: Date;
}

@Entity('audit_events')
export class AuditEvent {
  @PrimaryGeneratedColumn('uuid') id: string;
  @Column('uuid', { name: 'tenant_id' }) tenantId: string;
  @Column('text', { name: 'actor_type' }) actorType: 'USER' | 'API_KEY' | 'SYSTEM';
  @Column('uuid', { name: 'actor_id', nullable: true }) actorId: string | null;
  @Column('text') action: string;
  @Column('text', { name: 'object_type' }) objectType: string;
  @Column('text', { name: 'object_id' }) objectId: string;
  @Column('jsonb', { default: {} }) data: Record<string, unknown>;
  @Column('text', { name: 'request_id', nullable: true }) requestId: string | null;
  @CreateDateColumn({ name: 'created_at', type: 'timestamptz' }) createdAt: Date;
}
