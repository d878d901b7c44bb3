import { signUpTenant, type TestTenant } from '../support/api';
import { waitFor, type TestCluster } from '../support/cluster';
import { headlines, monthlySales, toCsv } from '../fixtures/training-data';
import { createClient } from 'graphql-ws';
import WebSocket from 'ws';
import {
  CANCEL_TRAINING, CREATE_DEPLOYMENT, CREATE_TRAINING, PREDICT, TRAINING_JOB, UPDATE_DEPLOYMENT, errorOf, gqlOf, trainingCluster, upload, waitTraining, type Gql,
} from './support';

let cluster: TestCluster;
let gql: Gql;
let a: TestTenant;
beforeAll(async () => {
  cluster = await trainingCluster([{ name: 'cpu-1', devices: 2 }]);
  gql = gqlOf(cluster);
  a = await signUpTenant(cluster.api, 'Alpha');
});
afterAll(() => cluster.close());

const predict = (deployment: string, input: unknown) => gql(PREDICT, { input: { deployment, input, wait: 30 } }, a);

describe('TEXT_CLASSIFICATION end to end', () => {
  it('trains TF-IDF models with AutoML, beats the majority class, deploys, predicts, rolls forward', async () => {
    const up = await upload(gql, a, 'headlines', toCsv(headlines(240)));
    expect(up.res.errors).toBeUndefined();
    const v = up.res.data.completeDatasetUpload;
    expect(v.columns.find((c: any) => c.name === 'text').type).toBe('TEXT');
    const train = async (seed: number, automl: Record<string, unknown>) => {
      const res = await gql(CREATE_TRAINING, {
        input: { datasetVersionId: v.id, modelName: 'topics', task: 'TEXT_CLASSIFICATION', targetColumn: 'label', textColumn: 'text', seed, automl },
      }, a);
      expect(res.errors).toBeUndefined();
      return waitTraining(gql, a, res.data.createTrainingJob.id);
    };
    const job = await train(11, { maxTrials: 3, algorithms: ['logistic_regression', 'mlp', 'xgboost'] });
    expect(job.status).toBe('SUCCEEDED');
    expect(new Set(job.trials.map((t: any) => t.algorithm))).toEqual(new Set(['logistic_regression', 'mlp', 'xgboost']));
    expect(job.trials.every((t: any) => t.status === 'SUCCEEDED' && t.hyperparameters.maxFeatures > 0)).toBe(true);
    const best = job.bestTrial.metrics;
    expect(best.accuracy).toBeGreaterThan(best.baselineAccuracy + 0.3);
    expect(best.f1Macro).toBeGreaterThan(best.baselineF1Macro);

    const dep = (await gql(CREATE_DEPLOYMENT, { input: { name: 'topics', modelVersionId: job.modelVersion.id } }, a)).data.createDeployment;
    const texts = ['the coach said the team will score a goal in the match', 'a new chip for the cloud server and laptop', 'bread and cheese recipe for dinner with spice'];
    const out = (await predict(dep.id, { rows: texts.map((text) => ({ text })) })).data.predict.output;
    expect(out.predictions.map((p: any) => p.label)).toEqual(['sport', 'tech', 'food']);
    expect(errorOf(await predict(dep.id, { rows: [{ text: 42 }] }))).toMatchObject({ code: 'BAD_USER_INPUT', field: 'input.rows[0].text' });

    const job2 = await train(12, { maxTrials: 1, algorithms: ['logistic_regression'] });
    expect(job2.modelVersion.version).toBe(2);
    await gql(UPDATE_DEPLOYMENT, { id: dep.id, modelVersionId: job2.modelVersion.id }, a);
    const out2 = (await predict(dep.id, { rows: [{ text: texts[0] }] })).data.predict.output;
    expect(out2).toMatchObject({ modelVersion: { version: 2 }, predictions: [{ label: 'sport' }] });
  });
});

describe('FORECASTING end to end', () => {
  it('backtests arima and augurs models in time order, beats the naive last value, and forecasts a horizon with intervals', async () => {
    const up = await upload(gql, a, 'sales', toCsv(monthlySales(96)));
    const v = up.res.data.completeDatasetUpload;
    expect(v.columns.map((c: any) => c.type)).toEqual(['DATETIME', 'NUMBER']);
    const res = await gql(CREATE_TRAINING, {
      input: {
        datasetVersionId: v.id, modelName: 'sales', task: 'FORECASTING', targetColumn: 'sales', timeColumn: 'month', horizon: 12, seed: 1,
        automl: { maxTrials: 4, algorithms: ['sarima', 'auto_arima', 'ets', 'mstl'] },
      },
    }, a);
    expect(res.errors).toBeUndefined();
    const job = await waitTraining(gql, a, res.data.createTrainingJob.id);
    expect(job.status).toBe('SUCCEEDED');
    expect(job.trials.filter((t: any) => t.status === 'SUCCEEDED').length).toBeGreaterThanOrEqual(3);
    const best = job.bestTrial.metrics;
    expect(best.smape).toBe(Math.min(...job.trials.filter((t: any) => t.metrics).map((t: any) => t.metrics.smape)));
    expect(best.smape).toBeLessThan(best.baselineSmape / 2);
    expect(best.mape).toBeLessThan(best.baselineMape);

    const dep = (await gql(CREATE_DEPLOYMENT, { input: { name: 'sales', modelVersionId: job.modelVersion.id } }, a)).data.createDeployment;
    const out = (await predict(dep.id, { horizon: 6 })).data.predict.output;
    expect(out.predictions).toHaveLength(6);
    expect(out.predictions[0]).toMatchObject({ step: 1, value: expect.any(Number), timestamp: '2024-01-01T00:00:00.000Z' });
    for (const p of out.predictions) {
      expect(p.lower95).toBeLessThanOrEqual(p.value);
      expect(p.upper95).toBeGreaterThanOrEqual(p.value);
    }
    // the level continues the trend: ~ (200 + 3·96) = 488 around the start of year 9
    expect(out.predictions[0].value).toBeGreaterThan(400);
    expect(out.predictions[0].value).toBeLessThan(650);
    expect(errorOf(await predict(dep.id, { rows: [{}] }))).toMatchObject({ code: 'BAD_USER_INPUT', field: 'input.horizon' });
    expect(errorOf(await predict(dep.id, { horizon: 0 }))).toMatchObject({ code: 'BAD_USER_INPUT', field: 'input.horizon' });
  });

  it('refuses a horizon too long for the series and a missing time column', async () => {
    const up = await upload(gql, a, 'short', toCsv(monthlySales(30)));
    const v = up.res.data.completeDatasetUpload;
    const base = { datasetVersionId: v.id, modelName: 'short', task: 'FORECASTING', targetColumn: 'sales', timeColumn: 'month', horizon: 12 };
    expect(errorOf(await gql(CREATE_TRAINING, { input: base }, a))).toMatchObject({ code: 'BAD_USER_INPUT', field: 'input.horizon' });
    expect(errorOf(await gql(CREATE_TRAINING, { input: { ...base, timeColumn: undefined, horizon: 3 } }, a))).toMatchObject({ code: 'BAD_USER_INPUT', field: 'input.timeColumn' });
    expect(errorOf(await gql(CREATE_TRAINING, { input: { ...base, timeColumn: 'sales', horizon: 3 } }, a))).toMatchObject({ code: 'BAD_USER_INPUT', field: 'input.timeColumn' });
  });
});

describe('cancellation and subscriptions', () => {
  it('pushes training updates until the end; cancelling the job cancels its trials', async () => {
    const up = await upload(gql, a, 'headlines-2', toCsv(headlines(240, 5)));
    const v = up.res.data.completeDatasetUpload;
    const res = await gql(CREATE_TRAINING, {
      input: {
        datasetVersionId: v.id, modelName: 'slow', task: 'TEXT_CLASSIFICATION', targetColumn: 'label', textColumn: 'text',
        algorithm: 'mlp', hyperparameters: { epochs: 40, batchSize: 32 },
      },
    }, a);
    const id = res.data.createTrainingJob.id;
    const url = cluster.api.server.url.replace('http', 'ws');
    const client = createClient({ url, webSocketImpl: WebSocket, connectionParams: { authorization: `Bearer ${a.token}` }, retryAttempts: 0 });
    const seen: string[] = [];
    const done = new Promise<void>((resolve, reject) => {
      client.subscribe({ query: `subscription($id: ID!) { trainingJobUpdated(id: $id) { id status progress } }`, variables: { id } }, {
        next: (m: any) => seen.push(m.data.trainingJobUpdated.status), error: reject, complete: resolve,
      });
    });
    await waitFor(async () => (await gql(TRAINING_JOB, { id }, a)).data.trainingJob.trials[0]?.status === 'RUNNING', 20_000, 'the trial to run');
    const canceled = await gql(CANCEL_TRAINING, { id }, a);
    expect(canceled.data.cancelTrainingJob).toEqual({ id, status: 'CANCELED' });
    await done;
    await client.dispose();
    expect(seen[0]).toBe('RUNNING');
    expect(seen.at(-1)).toBe('CANCELED');
    await waitFor(async () => (await gql(TRAINING_JOB, { id }, a)).data.trainingJob.trials.every((t: any) => t.status === 'CANCELED'), 5000, 'trials canceled');
    const job = (await gql(TRAINING_JOB, { id }, a)).data.trainingJob;
    expect(job.modelVersion).toBeNull();
  });
});
