/**
 * @nimbus/sdk: typed client for the Nimbus GraphQL API.
 * Types of the implemented operations are generated from schema/schema.graphql
 * (`npm run sdk:generate`); see README.md for a quick start.
 */
export {
  Nimbus, DEFAULT_BASE_URL,
  type NimbusOptions, type PredictServiceParams, type PredictDeploymentParams, type WaitableJob,
} from './client';
export type * from './types';
export * from './errors';
export { verifyWebhook, type WebhookPayload, type WebhookHeaders, type VerifyWebhookOptions } from './webhooks';
export { PageIterator, type Page, type ListOptions } from './pagination';
export { isTerminal, TERMINAL_STATUSES, type WaitOptions } from './wait';
export { resolveWebSocket } from './websocket';
export { imageToInput } from './images';
export type { TypedDocument, RequestOptions, FetchLike } from './transport';
export type { UploadSource } from './upload';
export type * from './services';
export type {
  ApiKeyScope, AutomlInput, ColumnType, CreateApiKeyInput, CreateDatasetInput, CreateDeploymentInput, CreateTrainingJobInput,
  DatasetFormat, Hardware, ImputeStrategy, JobStatus, PredictInput, Role, SetQuotaInput, SignUpInput, TenantStatus,
  TrainingTask, TransformInput, TransformType, WebhookEvent,
} from './generated/graphql';
/** The generated typed documents and operation types, for `nimbus.request(document, variables)`. */
export * as documents from './generated/graphql';
export { SDK_VERSION } from './version';
