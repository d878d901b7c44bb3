/** Contract operations of the training section (operations.graphql) and helpers the training tests share. */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TestTenant } from '../support/api';
import { startCluster, waitFor, type TestCluster } from '../support/cluster';

/**
 * A cluster whose API and node agents share a temporary artifact store (DATA_DIR), removed on close:
 * the API takes it as an override, the agents inherit it from this process's environment.
 */
export async function trainingCluster(agents: Array<{ name: string; devices?: number }>): Promise<TestCluster> {
  const dataDir = mkdtempSync(join(tmpdir(), 'nimbus-training-test-'));
  process.env.DATA_DIR = dataDir;
  const cluster = await startCluster({ agents, apiOverrides: { DATA_DIR: dataDir } });
  const close = cluster.close.bind(cluster);
  cluster.close = async () => {
    await close();
    rmSync(dataDir, { recursive: true, force: true });
  };
  return cluster;
}

export const CREATE_DATASET = `mutation CreateDataset($input: CreateDatasetInput!) {
  createDataset(input: $input) { dataset { id name } upload { id url method headers expiresAt } }
}`;
export const CREATE_UPLOAD = `mutation($datasetId: ID!) { createDatasetUpload(datasetId: $datasetId) { id url method headers expiresAt } }`;
export const COMPLETE_UPLOAD = `mutation CompleteDatasetUpload($uploadId: ID!) {
  completeDatasetUpload(uploadId: $uploadId) {
    id version rowCount contentHash
    columns { name type missingCount distinctCount min max mean }
  }
}`;
export const DATASET = `query Dataset($id: ID!) { dataset(id: $id) { id name versions { id version rowCount contentHash createdAt } } }`;
export const CREATE_TRAINING = `mutation CreateTrainingJob($input: CreateTrainingJobInput!) { createTrainingJob(input: $input) { id status } }`;
export const TRAINING_JOB = `query TrainingJob($id: ID!) {
  trainingJob(id: $id) {
    id status progress logs
    trials { id algorithm hyperparameters status metrics attempt logs }
    bestTrial { id algorithm metrics }
    modelVersion { id version metrics }
    usage { seconds hardware }
    error { code message }
  }
}`;
export const CANCEL_TRAINING = `mutation CancelTrainingJob($id: ID!) { cancelTrainingJob(id: $id) { id status } }`;
export const MODELS = `query Models($first: Int, $after: String) {
  models(first: $first, after: $after) {
    edges { node { id name task versions { id version metrics createdAt datasetVersion { id } trainingJob { id } } } }
    pageInfo { hasNextPage endCursor }
  }
}`;
export const CREATE_DEPLOYMENT = `mutation CreateDeployment($input: CreateDeploymentInput!) {
  createDeployment(input: $input) { id name status modelVersion { id version } }
}`;
export const UPDATE_DEPLOYMENT = `mutation UpdateDeployment($id: ID!, $modelVersionId: ID!) {
  updateDeployment(id: $id, modelVersionId: $modelVersionId) { id status modelVersion { id version } }
}`;
export const PREDICT = `mutation Predict($input: PredictInput!) {
  predict(input: $input) { id status output error { code message } usage { seconds hardware } }
}`;

export type Gql = (q: string, v: Record<string, unknown>, t: TestTenant) => Promise<any>;
export const gqlOf = (cluster: TestCluster): Gql => (q, v, t) => cluster.api.gql(q, v, t.token);

export async function putFile(url: string, body: string | Buffer, contentType: string, headers: Record<string, string> = {}) {
  const res = await fetch(url, { method: 'PUT', body, headers: { 'content-type': contentType, ...headers } });
  return { status: res.status, body: (await res.json().catch(() => null)) as any };
}

/** createDataset → PUT → completeDatasetUpload; returns the dataset id and the GraphQL answer of the completion. */
export async function upload(gql: Gql, t: TestTenant, name: string, body: string | Buffer, format: 'CSV' | 'JSONL' = 'CSV') {
  const created = await gql(CREATE_DATASET, { input: { name, format } }, t);
  if (!created.data) throw new Error(JSON.stringify(created.errors));
  const { dataset, upload: u } = created.data.createDataset;
  const put = await putFile(u.url, body, u.headers['content-type']);
  if (put.status !== 200) throw new Error(`PUT ${put.status} ${JSON.stringify(put.body)}`);
  const done = await gql(COMPLETE_UPLOAD, { uploadId: u.id }, t);
  return { datasetId: dataset.id as string, uploadId: u.id as string, res: done };
}

export async function waitTraining(gql: Gql, t: TestTenant, id: string, timeoutMs = 120_000): Promise<any> {
  let job: any;
  await waitFor(async () => {
    const res = await gql(TRAINING_JOB, { id }, t);
    if (res.errors) throw new Error(JSON.stringify(res.errors));
    job = res.data.trainingJob;
    return ['SUCCEEDED', 'FAILED', 'CANCELED'].includes(job.status);
  }, timeoutMs, `training job ${id}`);
  return job;
}

export const errorOf = (res: any) => ({ code: res.errors?.[0]?.extensions?.code, field: res.errors?.[0]?.extensions?.field, message: res.errors?.[0]?.message as string | undefined });
