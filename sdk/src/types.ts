/**
 * The SDK's object types: the generated selections (fragments and operation results of
 * src/operations), with JSON scalars given the shapes the API documents.
 */
import type {
  ApiKeysQuery, CreateApiKeyMutation, CurrentBillQuery, DatasetFieldsFragment, DatasetVersionFieldsFragment,
  DeploymentFieldsFragment, InvoiceFieldsFragment, LogInMutation, MeQuery, ModelQuery, ModelSummaryFragment,
  ModelVersionFieldsFragment, MoneyFieldsFragment, NodesQuery, PredictionFieldsFragment, PredictionSummaryFragment,
  QuotasQuery, RevokeApiKeyMutation, ServicesQuery, SetQuotaMutation, SignUpMutation, TrainingJobFieldsFragment,
  TrialFieldsFragment, UploadTargetFieldsFragment, UsageQuery, WebhookDeliveriesQuery, WebhookSettingsQuery,
} from './generated/graphql';

type Replace<T, R> = Omit<T, keyof R> & R;

/** A prediction with its output typed (see services.ts). */
export type Prediction<TOutput = unknown> = Replace<PredictionFieldsFragment, { output: TOutput | null }>;
export type PredictionSummary = PredictionSummaryFragment;
export type Service = ServicesQuery['services'][number];
export type Me = MeQuery['me'];
export type ApiKey = ApiKeysQuery['apiKeys']['edges'][number]['node'];
export type CreatedApiKey = CreateApiKeyMutation['createApiKey'];
export type RevokedApiKey = RevokeApiKeyMutation['revokeApiKey'];
export type SignUpResult = SignUpMutation['signUp'];
export type LogInResult = LogInMutation['logIn'];
export type ClusterNode = NodesQuery['nodes'][number];
export type Quota = QuotasQuery['quotas'][number];
export type QuotaSetting = SetQuotaMutation['setQuota'];
export type WebhookSettings = WebhookSettingsQuery['webhookSettings'];
export type WebhookDelivery = WebhookDeliveriesQuery['webhookDeliveries']['edges'][number]['node'];

/** Held-out metrics by name (accuracy, f1Macro, rmse, …; the baseline's as baselineX). */
export type Metrics = Record<string, number>;
export type Hyperparameters = Record<string, string | number | boolean>;

export type UploadTarget = Replace<UploadTargetFieldsFragment, { headers: Record<string, string> }>;
export type Dataset = DatasetFieldsFragment;
export type DatasetVersion = DatasetVersionFieldsFragment;
export type Trial = Replace<TrialFieldsFragment, { metrics: Metrics | null; hyperparameters: Hyperparameters }>;
export type ModelVersion = Replace<ModelVersionFieldsFragment, {
  metrics: Metrics;
  hyperparameters: Hyperparameters;
  /** What predict expects: the feature columns of each row (and, for forecasting, the horizon). */
  featureSchema: FeatureSchema;
  transforms: unknown[];
}>;
export interface FeatureSchema {
  task: string;
  features: Array<{ name: string; type: string; nullable: boolean }>;
  target: { name: string; type: string; classes?: string[] };
  timeColumn?: string;
  horizon?: number;
}
export type TrainingJob = Replace<TrainingJobFieldsFragment, { trials: Trial[]; bestTrial: Trial | null; modelVersion: ModelVersion | null }>;
export type ModelSummary = Replace<ModelSummaryFragment, {
  versions: Array<Replace<ModelSummaryFragment['versions'][number], { metrics: Metrics }>>;
}>;
export type Model = Replace<ModelQuery['model'], { versions: ModelVersion[] }>;
export type Deployment = DeploymentFieldsFragment;

export type Money = MoneyFieldsFragment;
export type Usage = UsageQuery['usage'];
export type UsageRow = Usage['rows'][number];
export type CurrentBill = CurrentBillQuery['currentBill'];
export type BillLine = CurrentBill['lines'][number];
export type Invoice = InvoiceFieldsFragment;
