import { GraphQLJSON } from 'graphql-scalars';
import { Field, Float, ID, InputType, Int, ObjectType, registerEnumType } from 'type-graphql';
import { ConnectionType } from '../../platform/graphql/connection';
import { enumOf } from '../../platform/graphql/enums';
import { HardwareEnum, JobError, JobStatusEnum, UsageSummary, WebhookEventEnum } from '../compute/compute.types';
import { IMPUTE_STRATEGIES, TASKS, TRANSFORM_TYPES } from './training.contract';

export const TrainingTaskEnum = enumOf(TASKS);
export const DatasetFormatEnum = enumOf(['CSV', 'JSONL'] as const);
export const TransformTypeEnum = enumOf(TRANSFORM_TYPES);
export const ImputeStrategyEnum = enumOf(IMPUTE_STRATEGIES);
/** GraphQL names in capitals; the values (in profiles and feature schemas) are lower-case. */
export const ColumnTypeEnum = { NUMBER: 'number', INTEGER: 'integer', BOOLEAN: 'boolean', CATEGORY: 'category', TEXT: 'text', DATETIME: 'datetime' } as const;
registerEnumType(TrainingTaskEnum, { name: 'TrainingTask' });
registerEnumType(DatasetFormatEnum, { name: 'DatasetFormat' });
registerEnumType(TransformTypeEnum, { name: 'TransformType' });
registerEnumType(ImputeStrategyEnum, { name: 'ImputeStrategy' });
registerEnumType(ColumnTypeEnum, { name: 'ColumnType', description: 'Inferred type of a dataset column' });

// ---- datasets -------------------------------------------------------------------------------------

@ObjectType()
export class ValueCount {
  @Field() value: string;
  @Field(() => Int) count: number;
}

@ObjectType()
export class DatasetColumn {
  @Field() name: string;
  @Field(() => ColumnTypeEnum) type: string;
  @Field(() => Int) missingCount: number;
  @Field(() => Int) distinctCount: number;
  @Field({ description: 'distinctCount is an estimate (HyperLogLog) past 10,000 distinct values' }) distinctApproximate: boolean;
  @Field(() => Float, { nullable: true }) min: number | null;
  @Field(() => Float, { nullable: true }) max: number | null;
  @Field(() => Float, { nullable: true }) mean: number | null;
  @Field(() => [ValueCount], { nullable: true, description: 'Most frequent values of category and boolean columns' }) topValues?: ValueCount[];
}

@ObjectType()
export class DatasetVersion {
  @Field(() => ID) id: string;
  @Field(() => Int) version: number;
  @Field(() => Int) rowCount: number;
  @Field({ description: 'SHA-256 of the file, hex: the same bytes are the same version' }) contentHash: string;
  @Field(() => Float) sizeBytes: number;
  @Field(() => [DatasetColumn]) columns: DatasetColumn[];
  @Field() createdAt: Date;
}

@ObjectType()
export class Dataset {
  @Field(() => ID) id: string;
  @Field() name: string;
  @Field(() => DatasetFormatEnum) format: string;
  @Field() createdAt: Date;
  @Field(() => [DatasetVersion], { description: 'Newest first' }) versions: DatasetVersion[];
}

export const DatasetConnection = ConnectionType(Dataset, 'Dataset');

@ObjectType()
export class UploadTarget {
  @Field(() => ID) id: string;
  @Field({ description: 'Signed URL; PUT the file there (valid 15 minutes, once)' }) url: string;
  @Field() method: string;
  @Field(() => GraphQLJSON, { description: 'Headers to send with the PUT' }) headers: unknown;
  @Field() expiresAt: Date;
  @Field(() => Float) maxBytes: number;
}

@ObjectType()
export class CreateDatasetPayload {
  @Field(() => Dataset) dataset: Dataset;
  @Field(() => UploadTarget) upload: UploadTarget;
}

@InputType()
export class CreateDatasetInput {
  @Field() name: string;
  // Optional in the contract (`format: CSV | JSONL`, no `!`): CSV when absent.
  @Field(() => DatasetFormatEnum, { nullable: true, description: 'CSV when absent' }) format?: string;
}

// ---- training -------------------------------------------------------------------------------------

@InputType()
export class AutomlInput {
  @Field(() => Int, { nullable: true, description: 'Trials at most (default: 2 per algorithm)' }) maxTrials?: number;
  @Field(() => Int, { nullable: true, description: 'Time budget (default 60); running trials are cancelled when it is spent' }) maxMinutes?: number;
  @Field(() => [String], { nullable: true, description: 'Default: every algorithm of the task' }) algorithms?: string[];
  @Field({ nullable: true, description: 'Leaderboard metric (default f1Macro, rmse or smape by task)' }) metric?: string;
  @Field(() => Int, { nullable: true, description: 'Trials running at once (default 4), within the tenant quota' }) parallelTrials?: number;
}

@InputType()
export class TransformInput {
  @Field(() => TransformTypeEnum) type: string;
  @Field(() => [String]) columns: string[];
  @Field(() => ImputeStrategyEnum, { nullable: true }) strategy?: string;
  @Field(() => GraphQLJSON, { nullable: true, description: 'Constant for the CONSTANT strategy' }) value?: unknown;
  @Field(() => Int, { nullable: true }) maxCategories?: number;
  @Field(() => Int, { nullable: true }) maxFeatures?: number;
  @Field(() => Int, { nullable: true }) ngram?: number;
  @Field(() => [String], { nullable: true, description: 'year, month, day, dayOfWeek, hour, dayOfYear' }) parts?: string[];
}

@InputType()
export class CreateTrainingJobInput {
  @Field(() => ID, { nullable: true }) datasetVersionId?: string;
  @Field(() => ID, { nullable: true, description: 'Its latest version (instead of datasetVersionId)' }) datasetId?: string;
  @Field() modelName: string;
  @Field(() => TrainingTaskEnum) task: string;
  @Field() targetColumn: string;
  @Field(() => [String], { nullable: true }) featureColumns?: string[];
  @Field({ nullable: true }) textColumn?: string;
  @Field({ nullable: true }) timeColumn?: string;
  @Field(() => Int, { nullable: true }) horizon?: number;
  @Field(() => [TransformInput], { nullable: true }) transforms?: TransformInput[];
  @Field(() => HardwareEnum, { nullable: true }) hardware?: string;
  @Field(() => Int, { nullable: true }) seed?: number;
  @Field(() => Float, { nullable: true, description: 'Held-out fraction (default 0.2)' }) holdout?: number;
  @Field(() => AutomlInput, { nullable: true }) automl?: AutomlInput;
  @Field({ nullable: true, description: 'A single trial of this algorithm (instead of automl)' }) algorithm?: string;
  @Field(() => GraphQLJSON, { nullable: true }) hyperparameters?: unknown;
  @Field({ nullable: true }) idempotencyKey?: string;
  @Field({ nullable: true, description: 'The job\'s terminal event (training.succeeded, .failed, .canceled) is POSTed there, signed like predictions\' webhooks' })
  webhookUrl?: string;
  @Field(() => [WebhookEventEnum], { nullable: true, description: 'PROGRESS to also receive progress (throttled)' }) webhookEvents?: string[];
}

@ObjectType()
export class Trial {
  @Field(() => ID) id: string;
  @Field(() => Int, { description: 'Index within its training job' }) trial: number;
  @Field() algorithm: string;
  @Field(() => GraphQLJSON) hyperparameters: unknown;
  @Field(() => JobStatusEnum) status: string;
  @Field(() => Float) progress: number;
  @Field(() => Int) attempt: number;
  @Field(() => GraphQLJSON, { nullable: true, description: 'Held-out metrics, and the baseline\'s as baselineX' }) metrics: unknown;
  @Field(() => [String]) logs: string[];
  @Field(() => JobError, { nullable: true }) error: JobError | null;
  @Field(() => Date, { nullable: true }) startedAt: Date | null;
  @Field(() => Date, { nullable: true }) completedAt: Date | null;
}

@ObjectType()
export class TrainingJob {
  @Field(() => ID) id: string;
  @Field(() => JobStatusEnum) status: string;
  @Field(() => Float) progress: number;
  @Field(() => [String]) logs: string[];
  @Field() modelName: string;
  @Field(() => TrainingTaskEnum) task: string;
  @Field({ description: 'The leaderboard\'s metric' }) metric: string;
  @Field(() => UsageSummary, { description: 'Sum of its trials\' billable usage' }) usage: UsageSummary;
  @Field(() => JobError, { nullable: true }) error: JobError | null;
  @Field() createdAt: Date;
  @Field(() => Date, { nullable: true }) startedAt: Date | null;
  @Field(() => Date, { nullable: true }) completedAt: Date | null;
  bestTrialId: string | null;
  modelVersionId: string | null;
}

// ---- models and deployments -----------------------------------------------------------------------

@ObjectType()
export class ModelRef {
  @Field(() => ID) id: string;
  @Field() name: string;
}

@ObjectType()
export class ModelVersion {
  @Field(() => ID) id: string;
  @Field(() => Int) version: number;
  @Field() algorithm: string;
  @Field(() => GraphQLJSON) metrics: unknown;
  @Field(() => GraphQLJSON) hyperparameters: unknown;
  @Field(() => GraphQLJSON, { description: 'Declared transforms it was trained with' }) transforms: unknown;
  @Field(() => GraphQLJSON, { description: 'Features predict expects: [{ name, type, nullable }]' }) featureSchema: unknown;
  @Field() createdAt: Date;
  modelId: string;
  modelName: string;
  datasetVersionId: string | null;
  trainingJobId: string | null;
}

@ObjectType()
export class Model {
  @Field(() => ID) id: string;
  @Field() name: string;
  @Field(() => TrainingTaskEnum) task: string;
  @Field() createdAt: Date;
  @Field(() => [ModelVersion], { description: 'Newest first' }) versions: ModelVersion[];
}

export const ModelConnection = ConnectionType(Model, 'Model');

@ObjectType()
export class Deployment {
  @Field(() => ID) id: string;
  @Field() name: string;
  @Field() status: string;
  @Field(() => HardwareEnum) hardware: string;
  @Field() createdAt: Date;
  @Field() updatedAt: Date;
  modelVersionId: string;
}

export const DeploymentConnection = ConnectionType(Deployment, 'Deployment');

@InputType()
export class CreateDeploymentInput {
  @Field() name: string;
  @Field(() => ID) modelVersionId: string;
  @Field(() => HardwareEnum, { nullable: true }) hardware?: string;
}
