import { GraphQLJSON } from 'graphql-scalars';
import { ArgsType, Field, Float, ID, InputType, Int, ObjectType, registerEnumType } from 'type-graphql';
import { ConnectionType, PageArgsType } from '../../platform/graphql/connection';
import { enumOf } from '../../platform/graphql/enums';
import { JOB_STATUSES } from './compute.entities';

export const JobStatusEnum = enumOf(JOB_STATUSES);
export const HardwareEnum = enumOf(['CPU', 'GPU'] as const);
export const WebhookEventEnum = enumOf(['STARTED', 'PROGRESS'] as const);
registerEnumType(JobStatusEnum, { name: 'JobStatus' });
registerEnumType(HardwareEnum, { name: 'Hardware' });
registerEnumType(WebhookEventEnum, { name: 'WebhookEvent', description: 'Non-terminal events a webhook may also receive; terminal states are always sent' });

@ObjectType()
export class JobError {
  @Field() code: string;
  @Field() message: string;
}

@ObjectType()
export class UsageSummary {
  @Field(() => Float, { description: 'Billable device-seconds' }) seconds: number;
  @Field(() => HardwareEnum) hardware: string;
}

@ObjectType()
export class NodeRef {
  @Field(() => ID) id: string;
}

@ObjectType()
export class Prediction {
  @Field(() => ID) id: string;
  @Field({ description: 'Service id, or deployment:<id>' }) service: string;
  @Field(() => JobStatusEnum) status: string;
  @Field(() => Float) progress: number;
  @Field(() => GraphQLJSON, { nullable: true }) output: unknown;
  @Field(() => JobError, { nullable: true }) error: JobError | null;
  @Field(() => [String]) logs: string[];
  @Field(() => Int) attempt: number;
  @Field(() => NodeRef, { nullable: true }) node: NodeRef | null;
  @Field(() => UsageSummary) usage: UsageSummary;
  @Field(() => GraphQLJSON, { description: 'Model load and inference times in ms' }) metrics: unknown;
  @Field() createdAt: Date;
  @Field(() => Date, { nullable: true }) startedAt: Date | null;
  @Field(() => Date, { nullable: true }) completedAt: Date | null;
}

export const PredictionConnection = ConnectionType(Prediction, 'Prediction');

@InputType()
export class PredictInput {
  @Field({ nullable: true, description: 'A pre-tuned service id (see `services`)' }) service?: string;
  @Field(() => ID, { nullable: true, description: 'A deployment of a custom model' }) deployment?: string;
  @Field(() => GraphQLJSON) input: unknown;
  @Field(() => Int, { nullable: true, description: 'Seconds to hold the request for the result (default 30, max 60, 0 = return at once)' }) wait?: number;
  @Field(() => Int, { nullable: true }) deadlineSeconds?: number;
  @Field({ nullable: true }) webhookUrl?: string;
  @Field(() => [WebhookEventEnum], { nullable: true }) webhookEvents?: string[];
  @Field({ nullable: true }) idempotencyKey?: string;
}

@ObjectType()
export class Pricing {
  @Field({ description: 'Unit of usage billed, e.g. "CPU minute"' }) unit: string;
  @Field({ description: 'Price per unit in cents, as a decimal string' }) unitAmountCents: string;
}

@ObjectType()
export class Service {
  @Field(() => ID) id: string;
  @Field() kind: string;
  @Field() name: string;
  @Field() description: string;
  @Field() modelName: string;
  @Field() modelVersion: string;
  @Field() modelLicense: string;
  @Field(() => HardwareEnum) hardware: string;
  @Field(() => GraphQLJSON) inputExample: unknown;
  @Field(() => Pricing) pricing: Pricing;
}

@ObjectType('Node')
export class NodeType {
  @Field(() => ID) id: string;
  @Field() name: string;
  @Field(() => HardwareEnum) hardware: string;
  @Field(() => Int, { description: 'Devices: GPUs on GPU nodes, worker slots on CPU nodes' }) gpuCount: number;
  @Field(() => String, { nullable: true }) gpuModel: string | null;
  @Field() status: string;
  @Field() lastHeartbeatAt: Date;
  @Field(() => Int) runningJobs: number;
}

@ObjectType()
export class QuotaTenant {
  @Field(() => ID) id: string;
  @Field() name: string;
}

@ObjectType('Quota')
export class QuotaType {
  @Field(() => QuotaTenant) tenant: QuotaTenant;
  @Field(() => HardwareEnum) hardware: string;
  @Field(() => Int) guaranteed: number;
  @Field(() => Int) limit: number;
  @Field(() => Int, { description: 'Devices held by the tenant\'s admitted and running jobs' }) used: number;
}

@InputType()
export class SetQuotaInput {
  @Field(() => ID) tenantId: string;
  // Optional in the contract (`hardware: CPU | GPU`, no `!`): CPU when absent.
  @Field(() => HardwareEnum, { nullable: true, description: 'CPU when absent' }) hardware?: string;
  @Field(() => Int) guaranteed: number;
  @Field(() => Int) limit: number;
}

@ObjectType('WebhookDelivery', { description: 'One attempt to POST a webhook (retries reuse webhookId)' })
export class WebhookDeliveryType {
  @Field(() => ID) id: string;
  @Field(() => ID, { description: 'The prediction or training job the event is about' }) jobId: string;
  @Field({ description: 'The webhook-id header: the same for every attempt of one event' }) webhookId: string;
  @Field({ description: 'prediction.succeeded, training.failed, …' }) eventType: string;
  @Field() url: string;
  @Field(() => Int) attempt: number;
  @Field(() => Int, { nullable: true, description: 'The receiver\'s HTTP status; null when no answer came' }) statusCode: number | null;
  @Field(() => String, { nullable: true }) error: string | null;
  @Field() delivered: boolean;
  @Field() createdAt: Date;
}

export const WebhookDeliveryConnection = ConnectionType(WebhookDeliveryType, 'WebhookDelivery');

@ArgsType()
export class WebhookDeliveriesArgs extends PageArgsType {
  @Field(() => ID, { nullable: true, description: 'Only this job\'s deliveries' }) jobId?: string;
}

@ObjectType()
export class ResendWebhookPayload {
  @Field({ description: 'The webhook-id header it is sent with: the same as the event\'s earlier attempts' }) webhookId: string;
  @Field() eventType: string;
  @Field() url: string;
}
