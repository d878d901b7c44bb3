import type { Client } from 'pg';
import { verifyWebhookSignature } from '../../src/modules/compute/webhook-signing';
import { signUpTenant, type TestTenant } from '../support/api';
import type { TestCluster } from '../support/cluster';
import { ownerClient } from '../support/db';
import { startWebhookReceiver } from '../support/receiver';
import { flowers, houses, toCsv, toJsonl } from '../fixtures/training-data';
import {
  CREATE_DEPLOYMENT, CREATE_TRAINING, DATASET, MODELS, PREDICT, TRAINING_JOB, UPDATE_DEPLOYMENT, errorOf, gqlOf, trainingCluster, upload, waitTraining, type Gql,
} from './support';

let cluster: TestCluster;
let owner: Client;
let gql: Gql;
let a: TestTenant;
let b: TestTenant;
beforeAll(async () => {
  cluster = await trainingCluster([{ name: 'cpu-1', devices: 2 }]);
  gql = gqlOf(cluster);
  owner = await ownerClient();
  a = await signUpTenant(cluster.api, 'Alpha');
  b = await signUpTenant(cluster.api, 'Beta');
});
afterAll(async () => {
  await owner.end();
  await cluster.close();
});

const predict = (deployment: string, input: unknown, t: TestTenant = a, extra: Record<string, unknown> = {}) =>
  gql(PREDICT, { input: { deployment, input, wait: 30, ...extra } }, t);

/** Fresh rows from the same generator (another seed), with their true labels. */
const FRESH = flowers(60, 99);
const featuresOf = (r: Record<string, unknown>) => {
  const { species: _s, ...rest } = r;
  return rest;
};

describe('TABULAR_CLASSIFICATION end to end', () => {
  let datasetVersionId: string;
  let datasetId: string;
  let deploymentId: string;
  let v1: { id: string; version: number };
  let trainingJobId: string;

  it('uploads and profiles a CSV into an immutable version; the same bytes give the same version', async () => {
    const csv = toCsv(flowers(300));
    const up = await upload(gql, a, 'flowers', csv);
    expect(up.res.errors).toBeUndefined();
    const v = up.res.data.completeDatasetUpload;
    datasetId = up.datasetId;
    datasetVersionId = v.id;
    expect(v).toMatchObject({ version: 1, rowCount: 300, contentHash: expect.stringMatching(/^[0-9a-f]{64}$/) });
    const col = (n: string) => v.columns.find((c: any) => c.name === n);
    expect(col('petal_length')).toMatchObject({ type: 'NUMBER', missingCount: 0, min: expect.any(Number), max: expect.any(Number), mean: expect.any(Number) });
    expect(col('petal_width').missingCount).toBe(11);
    expect(col('colour')).toMatchObject({ type: 'CATEGORY', distinctCount: 3, min: null, mean: null });
    expect(col('measured').type).toBe('DATETIME');
    expect(col('species')).toMatchObject({ type: 'CATEGORY', distinctCount: 3, missingCount: 0 });

    // The same bytes again, through a new upload of the same dataset: the same version, no new row.
    const again = await gql(`mutation($d: ID!) { createDatasetUpload(datasetId: $d) { id url headers } }`, { d: datasetId }, a);
    const u = again.data.createDatasetUpload;
    expect((await fetch(u.url, { method: 'PUT', body: csv, headers: u.headers })).status).toBe(200);
    const same = await gql(`mutation($u: ID!) { completeDatasetUpload(uploadId: $u) { id version } }`, { u: u.id }, a);
    expect(same.data.completeDatasetUpload).toEqual({ id: v.id, version: 1 });
    const ds = await gql(DATASET, { id: datasetId }, a);
    expect(ds.data.dataset.versions).toEqual([{ id: v.id, version: 1, rowCount: 300, contentHash: v.contentHash, createdAt: expect.any(String) }]);
  });

  it('trains with AutoML over four algorithms, ranks the trials, registers the best as version 1, and beats the majority class', async () => {
    const res = await gql(CREATE_TRAINING, {
      input: {
        datasetId, modelName: 'flowers', task: 'TABULAR_CLASSIFICATION', targetColumn: 'species', seed: 7,
        automl: { maxTrials: 4, algorithms: ['xgboost', 'logistic_regression', 'decision_tree', 'mlp'], parallelTrials: 2 },
        transforms: [
          { type: 'IMPUTE', columns: ['petal_width'], strategy: 'MEDIAN' },
          { type: 'DATE_PARTS', columns: ['measured'], parts: ['month', 'dayOfWeek'] },
          { type: 'ONE_HOT', columns: ['colour'], maxCategories: 5 },
        ],
      },
    }, a);
    expect(res.errors).toBeUndefined();
    expect(res.data.createTrainingJob.status).toBe('RUNNING');
    trainingJobId = res.data.createTrainingJob.id;
    const job = await waitTraining(gql, a, trainingJobId);
    expect(job).toMatchObject({ status: 'SUCCEEDED', progress: 1, error: null });
    expect(job.trials).toHaveLength(4);
    expect(new Set(job.trials.map((t: any) => t.algorithm))).toEqual(new Set(['xgboost', 'logistic_regression', 'decision_tree', 'mlp']));
    for (const t of job.trials) {
      expect(t.status).toBe('SUCCEEDED');
      expect(t.metrics).toMatchObject({ accuracy: expect.any(Number), f1Macro: expect.any(Number), logLoss: expect.any(Number), baselineF1Macro: expect.any(Number) });
    }
    // Leaderboard: the best trial has the highest F1 (the default metric) ...
    const bestF1 = Math.max(...job.trials.map((t: any) => t.metrics.f1Macro));
    expect(job.bestTrial.metrics.f1Macro).toBe(bestF1);
    // ... and beats the trivial baseline (majority class) on the held-out split.
    expect(job.bestTrial.metrics.accuracy).toBeGreaterThan(job.bestTrial.metrics.baselineAccuracy + 0.3);
    expect(job.bestTrial.metrics.f1Macro).toBeGreaterThan(job.bestTrial.metrics.baselineF1Macro);
    expect(job.modelVersion).toMatchObject({ version: 1, metrics: job.bestTrial.metrics });
    v1 = { id: job.modelVersion.id, version: job.modelVersion.version };
    expect(job.logs.some((l: string) => /best: trial \d+/.test(l))).toBe(true);
    // Usage: the sum of the trials' billable ledger rows.
    const { rows } = await owner.query(
      `SELECT COALESCE(sum(u.billable_ms), 0)::int AS ms, count(*)::int AS n FROM usage_ledger u JOIN jobs j ON j.id = u.job_id WHERE j.parent_id = $1 AND u.billable`, [trainingJobId]);
    expect(rows[0].n).toBe(4);
    expect(job.usage.seconds).toBeCloseTo(rows[0].ms / 1000, 3);
    expect(job.usage.hardware).toBe('CPU');
  });

  it('lists the model with its version and lineage', async () => {
    const res = await gql(MODELS, { first: 10 }, a);
    const model = res.data.models.edges.map((e: any) => e.node).find((m: any) => m.name === 'flowers');
    expect(model).toMatchObject({ task: 'TABULAR_CLASSIFICATION', versions: [{ id: v1.id, version: 1, datasetVersion: { id: datasetVersionId }, trainingJob: { id: trainingJobId } }] });
    const { rows } = await owner.query(`SELECT transforms, feature_schema, algorithm FROM model_versions WHERE id = $1`, [v1.id]);
    expect(rows[0].transforms).toHaveLength(3);
    expect(rows[0].feature_schema.features.map((f: any) => f.name).sort()).toEqual(['colour', 'measured', 'petal_length', 'petal_width', 'sepal_length']);
  });

  it('deploys the version and predicts with class probabilities through a node', async () => {
    const dep = await gql(CREATE_DEPLOYMENT, { input: { name: 'flowers-prod', modelVersionId: v1.id, hardware: 'CPU' } }, a);
    expect(dep.errors).toBeUndefined();
    expect(dep.data.createDeployment).toMatchObject({ name: 'flowers-prod', status: 'READY', modelVersion: v1 });
    deploymentId = dep.data.createDeployment.id;
    const res = await predict(deploymentId, { rows: FRESH.map(featuresOf) });
    expect(res.errors).toBeUndefined();
    expect(res.data.predict).toMatchObject({ status: 'SUCCEEDED', usage: { hardware: 'CPU' } });
    const out = res.data.predict.output;
    expect(out.modelVersion).toEqual(v1);
    expect(out.predictions).toHaveLength(FRESH.length);
    for (const p of out.predictions) {
      expect(Object.keys(p.probabilities).sort()).toEqual(['setosa', 'versicolor', 'virginica']);
      expect(Object.values(p.probabilities as Record<string, number>).reduce((x, y) => x + y, 0)).toBeCloseTo(1, 4);
      expect(p.probabilities[p.label]).toBe(Math.max(...Object.values(p.probabilities as Record<string, number>)));
    }
    const correct = out.predictions.filter((p: any, i: number) => p.label === FRESH[i]!.species).length;
    expect(correct / FRESH.length).toBeGreaterThan(0.8);
    // a row with a missing petal_width (the model imputes it) is accepted
    expect((await predict(deploymentId, { rows: [{ ...featuresOf(FRESH[0]!), petal_width: null }] })).data.predict.status).toBe('SUCCEEDED');
  });

  it('POSTs a training job\'s terminal webhook, signed with the tenant\'s secret, naming the model version it registered', async () => {
    const receiver = await startWebhookReceiver();
    const { received } = receiver;
    try {
      const url = receiver.url('/training-hook');
      const base = { datasetVersionId, modelName: 'flowers-hooked', task: 'TABULAR_CLASSIFICATION', targetColumn: 'species', seed: 3, algorithm: 'logistic_regression' };
      expect(errorOf(await gql(CREATE_TRAINING, { input: { ...base, webhookUrl: 'ftp://x' } }, a))).toMatchObject({ code: 'BAD_USER_INPUT', field: 'input.webhookUrl' });
      expect(errorOf(await gql(CREATE_TRAINING, { input: { ...base, webhookUrl: url, webhookEvents: ['STARTED'] } }, a)))
        .toMatchObject({ code: 'BAD_USER_INPUT', field: 'input.webhookEvents[0]' });
      const res = await gql(CREATE_TRAINING, { input: { ...base, webhookUrl: url } }, a);
      expect(res.errors).toBeUndefined();
      const job = await waitTraining(gql, a, res.data.createTrainingJob.id);
      expect(job.status).toBe('SUCCEEDED');
      let hit: (typeof received)[number] | undefined;
      const deadline = Date.now() + 10_000;
      while (!(hit = received.find((r) => JSON.parse(r.body).data.id === job.id)) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
      expect(hit).toBeDefined();
      const event = JSON.parse(hit!.body);
      expect(event).toMatchObject({ type: 'training.succeeded', data: { id: job.id, status: 'SUCCEEDED', output: { modelVersionId: job.modelVersion.id } } });
      const secret = (await gql('query { webhookSettings { signingSecret } }', {}, a)).data.webhookSettings.signingSecret;
      expect(verifyWebhookSignature(secret, hit!.headers, hit!.body)).toBe(true);
      // Its trials (jobs of their own) send nothing: one delivery, the training job's.
      await new Promise((r) => setTimeout(r, 1500));
      expect(received).toHaveLength(1);
    } finally {
      await receiver.close();
    }
  });

  it('rolls the deployment forward to version 2 and back, with no failed prediction and in-flight ones on their version', async () => {
    const res = await gql(CREATE_TRAINING, {
      input: { datasetVersionId, modelName: 'flowers', task: 'TABULAR_CLASSIFICATION', targetColumn: 'species', seed: 8, algorithm: 'logistic_regression', hyperparameters: { steps: 200 } },
    }, a);
    expect(res.errors).toBeUndefined();
    const job = await waitTraining(gql, a, res.data.createTrainingJob.id);
    expect(job.status).toBe('SUCCEEDED');
    expect(job.trials).toHaveLength(1);
    expect(job.trials[0].hyperparameters).toMatchObject({ steps: 200 });
    const v2 = job.modelVersion;
    expect(v2.version).toBe(2);

    const rows = FRESH.slice(0, 3).map(featuresOf);
    const inflight = await predict(deploymentId, { rows }, a, { wait: 0 });
    const during = Array.from({ length: 6 }, () => predict(deploymentId, { rows }));
    const upd = await gql(UPDATE_DEPLOYMENT, { id: deploymentId, modelVersionId: v2.id }, a);
    expect(upd.data.updateDeployment).toMatchObject({ id: deploymentId, status: 'READY', modelVersion: { id: v2.id, version: 2 } });
    const after = await predict(deploymentId, { rows });
    for (const r of [...(await Promise.all(during)), after]) expect(r.data.predict.status).toBe('SUCCEEDED');
    expect(after.data.predict.output.modelVersion).toEqual({ id: v2.id, version: 2 });
    const first = await gql(`query($id: ID!) { prediction(id: $id) { status output } }`, { id: inflight.data.predict.id }, a);
    expect(first.data.prediction.output?.modelVersion ?? (await waitPrediction(inflight.data.predict.id)).modelVersion).toEqual(v1);

    await gql(UPDATE_DEPLOYMENT, { id: deploymentId, modelVersionId: v1.id }, a);
    expect((await predict(deploymentId, { rows })).data.predict.output.modelVersion).toEqual(v1);
  });

  async function waitPrediction(id: string): Promise<any> {
    for (let i = 0; i < 100; i++) {
      const r = await gql(`query($id: ID!) { prediction(id: $id) { status output } }`, { id }, a);
      if (r.data.prediction.status === 'SUCCEEDED') return r.data.prediction.output;
      await new Promise((res) => setTimeout(res, 100));
    }
    throw new Error('prediction did not end');
  }

  it('refuses a missing, mistyped, null or unknown feature naming input.rows[i].<feature>', async () => {
    const ok = featuresOf(FRESH[0]!);
    const cases: Array<[unknown, string]> = [
      [{ rows: [ok, { ...ok, petal_length: undefined }] }, 'input.rows[1].petal_length'],
      [{ rows: [{ ...ok, petal_length: 'long' }] }, 'input.rows[0].petal_length'],
      [{ rows: [{ ...ok, sepal_length: null }] }, 'input.rows[0].sepal_length'],
      [{ rows: [{ ...ok, measured: 'yesterday' }] }, 'input.rows[0].measured'],
      [{ rows: [{ ...ok, wings: 2 }] }, 'input.rows[0].wings'],
      [{ rows: [] }, 'input.rows'],
      [{ horizon: 3 }, 'input.rows'],
    ];
    for (const [input, field] of cases) {
      const res = await predict(deploymentId, JSON.parse(JSON.stringify(input)));
      expect({ field, got: errorOf(res) }).toEqual({ field, got: { code: 'BAD_USER_INPUT', field, message: expect.stringContaining(field) } });
    }
  });

  it('refuses a bad training request naming the field, before anything is created', async () => {
    const base = { datasetId, modelName: 'flowers-x', task: 'TABULAR_CLASSIFICATION', targetColumn: 'species' };
    const { rows: [{ n: before }] } = await owner.query(`SELECT count(*)::int AS n FROM jobs WHERE tenant_id = $1`, [a.tenantId]);
    const cases: Array<[Record<string, unknown>, string, RegExp]> = [
      [{ ...base, targetColumn: 'kind' }, 'input.targetColumn', /column "kind" is not in dataset version 1/],
      [{ ...base, task: 'TABULAR_REGRESSION' }, 'input.targetColumn', /needs a numeric target/],
      [{ ...base, targetColumn: 'petal_length' }, 'input.targetColumn', /continuous number/],
      [{ ...base, automl: { algorithms: ['xgboost', 'random_forest'] } }, 'input.automl.algorithms[1]', /unknown algorithm "random_forest"/],
      [{ ...base, algorithm: 'xgboost', hyperparameters: { maxDepth: 99 } }, 'input.hyperparameters.maxDepth', /between 2 and 8/],
      [{ ...base, featureColumns: ['species'] }, 'input.featureColumns[0]', /target column/],
      [{ ...base, transforms: [{ type: 'DATE_PARTS', columns: ['colour'] }] }, 'input.transforms[0].columns[0]', /datetime/],
      [{ ...base, modelName: 'flowers', task: 'TEXT_CLASSIFICATION', textColumn: 'colour' }, 'input.modelName', /TABULAR_CLASSIFICATION model/],
      [{ ...base, datasetId: undefined, datasetVersionId: undefined }, 'input.datasetVersionId', /exactly one/],
    ];
    for (const [input, field, message] of cases) {
      const res = await gql(CREATE_TRAINING, { input }, a);
      expect({ field, got: errorOf(res) }).toEqual({ field, got: { code: 'BAD_USER_INPUT', field, message: expect.stringMatching(message) } });
    }
    const { rows: [{ n: after }] } = await owner.query(`SELECT count(*)::int AS n FROM jobs WHERE tenant_id = $1`, [a.tenantId]);
    expect(after).toBe(before);
  });

  it('answers NOT_FOUND for another tenant\'s dataset, training job, model version and deployment', async () => {
    const nf = (res: any) => errorOf(res).code;
    expect(nf(await gql(DATASET, { id: datasetId }, b))).toBe('NOT_FOUND');
    expect(nf(await gql(CREATE_TRAINING, { input: { datasetId, modelName: 'steal', task: 'TABULAR_CLASSIFICATION', targetColumn: 'species' } }, b))).toBe('NOT_FOUND');
    expect(nf(await gql(CREATE_TRAINING, { input: { datasetVersionId, modelName: 'steal', task: 'TABULAR_CLASSIFICATION', targetColumn: 'species' } }, b))).toBe('NOT_FOUND');
    expect(nf(await gql(TRAINING_JOB, { id: trainingJobId }, b))).toBe('NOT_FOUND');
    expect(nf(await gql(CREATE_DEPLOYMENT, { input: { name: 'x', modelVersionId: v1.id } }, b))).toBe('NOT_FOUND');
    expect(nf(await gql(`query($id: ID!) { modelVersion(id: $id) { id } }`, { id: v1.id }, b))).toBe('NOT_FOUND');
    expect(nf(await predict(deploymentId, { rows: [featuresOf(FRESH[0]!)] }, b))).toBe('NOT_FOUND');
    expect(nf(await gql(UPDATE_DEPLOYMENT, { id: deploymentId, modelVersionId: v1.id }, b))).toBe('NOT_FOUND');
    const models = await gql(MODELS, { first: 50 }, b);
    expect(models.data.models.edges).toEqual([]);
  });

  it('refuses an IMPUTE constant that does not fit its column\'s type naming the column, and trains with one that does', async () => {
    const rows = flowers(60, 5).map((r, i) => ({ ...r, fresh: i % 4 === 0 ? null : i % 3 === 0 }));
    const up = await upload(gql, a, 'flowers-fresh', toCsv(rows));
    expect(up.res.errors).toBeUndefined();
    expect(up.res.data.completeDatasetUpload.columns.find((c: any) => c.name === 'fresh')).toMatchObject({ type: 'BOOLEAN', missingCount: 15 });
    const base = { datasetId: up.datasetId, modelName: 'flowers-impute', task: 'TABULAR_CLASSIFICATION', targetColumn: 'species' };
    const impute = (column: string, value: unknown) => ({ ...base, transforms: [{ type: 'ONE_HOT', columns: ['colour'] }, { type: 'IMPUTE', columns: [column], strategy: 'CONSTANT', value }] });
    const field = 'input.transforms[1].columns[0]';
    const cases: Array<[Record<string, unknown>, RegExp]> = [
      [impute('fresh', 'yes'), /boolean column needs true or false/],
      [impute('fresh', 2), /boolean column needs true or false/],
      [impute('fresh', '1'), /boolean column needs true or false/],
      [impute('measured', 5), /datetime column needs a date string/],
      [impute('measured', 'soon'), /datetime column needs a date string/],
      [impute('measured', true), /datetime column needs a date string/],
      [impute('petal_width', '0.5'), /numeric column needs a numeric constant/],
      [impute('petal_width', false), /numeric column needs a numeric constant/],
    ];
    const { rows: [{ n: before }] } = await owner.query(`SELECT count(*)::int AS n FROM jobs WHERE tenant_id = $1`, [a.tenantId]);
    for (const [input, message] of cases) {
      const res = await gql(CREATE_TRAINING, { input }, a);
      expect({ input, got: errorOf(res) }).toEqual({ input, got: { code: 'BAD_USER_INPUT', field, message: expect.stringMatching(message) } });
    }
    const { rows: [{ n: after }] } = await owner.query(`SELECT count(*)::int AS n FROM jobs WHERE tenant_id = $1`, [a.tenantId]);
    expect(after).toBe(before);
    const res = await gql(CREATE_TRAINING, {
      input: {
        ...base, algorithm: 'decision_tree',
        transforms: [
          { type: 'IMPUTE', columns: ['fresh'], strategy: 'CONSTANT', value: 'TRUE' },
          { type: 'IMPUTE', columns: ['measured'], strategy: 'CONSTANT', value: '2024-02-01' },
          { type: 'IMPUTE', columns: ['petal_width'], strategy: 'CONSTANT', value: 0.5 },
        ],
      },
    }, a);
    expect(res.errors).toBeUndefined();
    expect((await waitTraining(gql, a, res.data.createTrainingJob.id)).status).toBe('SUCCEEDED');
  });
});

describe('TABULAR_REGRESSION end to end (JSONL)', () => {
  it('trains three algorithms and more, beats the mean on the held-out split, deploys and predicts with intervals', async () => {
    const up = await upload(gql, a, 'houses', toJsonl(houses(400)), 'JSONL');
    expect(up.res.errors).toBeUndefined();
    const v = up.res.data.completeDatasetUpload;
    expect(v.columns.map((c: any) => [c.name, c.type])).toEqual([['size', 'INTEGER'], ['rooms', 'INTEGER'], ['district', 'CATEGORY'], ['garden', 'BOOLEAN'], ['price', 'NUMBER']]);
    const res = await gql(CREATE_TRAINING, {
      input: {
        datasetVersionId: v.id, modelName: 'houses', task: 'TABULAR_REGRESSION', targetColumn: 'price', seed: 3,
        automl: { maxTrials: 5, algorithms: ['linear_regression', 'xgboost', 'decision_tree', 'mlp'], parallelTrials: 2, metric: 'rmse' },
        transforms: [{ type: 'STANDARDIZE', columns: ['size', 'rooms'] }],
      },
    }, a);
    expect(res.errors).toBeUndefined();
    const job = await waitTraining(gql, a, res.data.createTrainingJob.id);
    expect(job.status).toBe('SUCCEEDED');
    expect(job.trials).toHaveLength(5);
    expect(new Set(job.trials.map((t: any) => t.algorithm)).size).toBe(4);
    const best = job.bestTrial.metrics;
    expect(best.rmse).toBe(Math.min(...job.trials.filter((t: any) => t.metrics).map((t: any) => t.metrics.rmse)));
    expect(best.rmse).toBeLessThan(best.baselineRmse / 3);
    expect(best.r2).toBeGreaterThan(0.8);

    const dep = await gql(CREATE_DEPLOYMENT, { input: { name: 'houses', modelVersionId: job.modelVersion.id } }, a);
    const out = (await predict(dep.data.createDeployment.id, { rows: [{ size: 100, rooms: 3, district: 'centre', garden: true }, { size: 50, rooms: 1, district: 'south', garden: false }] })).data.predict.output;
    const [big, small] = out.predictions;
    // price ≈ 50 + 2.1·size + 8·rooms + district + garden: 359 and 153
    expect(big.value).toBeGreaterThan(300);
    expect(small.value).toBeLessThan(220);
    expect(big.lower95).toBeLessThan(big.value);
    expect(big.upper95).toBeGreaterThan(big.value);
    expect(out.modelVersion.version).toBe(1);
  });
});
