import { Column, CreateDateColumn, Entity, PrimaryColumn, PrimaryGeneratedColumn } from 'typeorm';

export const JOB_STATUSES = ['QUEUED', 'ADMITTED', 'RUNNING', 'SUCCEEDED', 'FAILED', 'CANCELED'] as const;
export type JobStatus = (typeof JOB_STATUSES)[number];
export const TERMINAL: ReadonlySet<JobStatus> = new Set(['SUCCEEDED', 'FAILED', 'CANCELED']);
export type JobKind = 'PREDICTION' | 'TRAINING' | 'TRIAL';
export type Hardware = 'CPU' | 'GPU';

const numeric = { to: (v: number) => v, from: (v: string | null) => (v === null ? null : Number(v)) };

/** One unit of work on the node pool: a prediction, a training job or one of its trials. */
@Entity('jobs')
export class Job {
  @PrimaryGeneratedColumn('uuid') id: string;
  @Column('uuid', { name: 'tenant_id' }) tenantId: string;
  @Column('text') kind: JobKind;
  /** Service id (`vision.faces`) or `deployment:<id>` for custom models. */
  @Column('text') service: string;
  @Column('uuid', { name: 'parent_id', nullable: true }) parentId: string | null;
  @Column('text') status: JobStatus;
  @Column('text') hardware: Hardware;
  @Column('int') devices: number;
  @Column('jsonb', { nullable: true }) input: unknown;
  @Column('jsonb', { nullable: true }) output: unknown;
  @Column('jsonb', { nullable: true }) error: { code: string; message: string } | null;
  @Column('real', { default: 0 }) progress: number;
  @Column('text', { array: true, default: '{}' }) logs: string[];
  @Column('text', { name: 'node_id', nullable: true }) nodeId: string | null;
  /** Attempts are numbered by the control plane; a result from an older attempt is discarded. */
  @Column('int', { default: 0 }) attempt: number;
  @Column('int', { name: 'max_attempts', default: 3 }) maxAttempts: number;
  @Column('boolean', { default: false }) borrowed: boolean;
  @Column('text', { name: 'idempotency_key', nullable: true }) idempotencyKey: string | null;
  @Column('text', { name: 'webhook_url', nullable: true }) webhookUrl: string | null;
  @Column('text', { name: 'webhook_events', array: true, default: '{}' }) webhookEvents: string[];
  @Column('timestamptz', { name: 'deadline_at', nullable: true }) deadlineAt: Date | null;
  @Column('jsonb', { default: {} }) metrics: Record<string, number>;
  @CreateDateColumn({ name: 'created_at', type: 'timestamptz' }) createdAt: Date;
  @Column('timestamptz', { name: 'admitted_at', nullable: true }) admittedAt: Date | null;
  @Column('timestamptz', { name: 'started_at', nullable: true }) startedAt: Date | null;
  @Column('timestamptz', { name: 'completed_at', nullable: true }) completedAt: Date | null;
  /** Inputs and outputs are dropped after this (retention); metadata stays. */
  @Column('timestamptz', { name: 'data_expires_at', nullable: true }) dataExpiresAt: Date | null;
}

/** The source of truth for billing: one row per (job, attempt), written with the job's state change. */
@Entity('usage_ledger')
export class UsageRecord {
  @PrimaryGeneratedColumn('uuid') id: string;
  @Column('uuid', { name: 'tenant_id' }) tenantId: string;
  @Column('uuid', { name: 'job_id' }) jobId: string;
  @Column('int') attempt: number;
  @Column('text', { name: 'job_kind' }) jobKind: JobKind;
  @Column('text') service: string;
  @Column('text') hardware: Hardware;
  @Column('int') devices: number;
  @Column('text', { name: 'node_id', nullable: true }) nodeId: string | null;
  @Column('timestamptz', { name: 'started_at' }) startedAt: Date;
  @Column('timestamptz', { name: 'ended_at' }) endedAt: Date;
  /** devices × wall time, in milliseconds (exact integer; seconds = ms / 1000). */
  @Column('bigint', { name: 'billable_ms', transformer: numeric }) billableMs: number;
  @Column('boolean') billable: boolean;
  @Column('text', { nullable: true }) reason: string | null;
  @Column('timestamptz', { name: 'reported_at', nullable: true }) reportedAt: Date | null;
  @CreateDateColumn({ name: 'created_at', type: 'timestamptz' }) createdAt: Date;
}

/** Platform-owned: the node pool as the control plane last saw it. */
@Entity('nodes')
export class NodeRecord {
  @PrimaryColumn('text') id: string;
  @Column('text') hardware: Hardware;
  @Column('int') devices: number;
  @Column('text', { name: 'gpu_model', nullable: true }) gpuModel: string | null;
  @Column('text') status: 'READY' | 'LOST';
  @Column('timestamptz', { name: 'last_heartbeat_at' }) lastHeartbeatAt: Date;
  @CreateDateColumn({ name: 'registered_at', type: 'timestamptz' }) registeredAt: Date;
}

/** Platform-owned: devices of a hardware class a tenant is guaranteed and may borrow up to. */
@Entity('quotas')
export class Quota {
  @PrimaryColumn('uuid', { name: 'tenant_id' }) tenantId: string;
  @PrimaryColumn('text') hardware: Hardware;
  @Column('int') guaranteed: number;
  @Column('int', { name: 'limit' }) limit: number;
}

/** Every attempt to deliver a webhook, listable by the tenant. */
@Entity('webhook_deliveries')
export class WebhookDelivery {
  @PrimaryGeneratedColumn('uuid') id: string;
  @Column('uuid', { name: 'tenant_id' }) tenantId: string;
  @Column('uuid', { name: 'job_id' }) jobId: string;
  /** Standard Webhooks `webhook-id`: stable across retries of one event. */
  @Column('text', { name: 'webhook_id' }) webhookId: string;
  @Column('text', { name: 'event_type' }) eventType: string;
  @Column('text') url: string;
  @Column('int') attempt: number;
  @Column('int', { name: 'status_code', nullable: true }) statusCode: number | null;
  @Column('text', { nullable: true }) error: string | null;
  @Column('boolean') delivered: boolean;
  @CreateDateColumn({ name: 'created_at', type: 'timestamptz' }) createdAt: Date;
}
