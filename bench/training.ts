import 'reflect-metadata';
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { Readable } from 'node:stream';
import { Client } from 'pg';
import type { App } from '../src/app';
import type { ControlPlane } from '../src/modules/compute/control-plane/control-plane';
import type { RunningServer } from '../src/server';
import { LocalArtifactStore } from '../src/modules/training/artifact-store';
import { profileDataset, readTable } from '../src/modules/training/dataset-parser';
import { seededRandom } from '../src/platform/random';
import { defaultHyperparameters, type Hyperparameters, type Task, type TrialSpec } from '../src/modules/training/training.contract';
import { loadArtifact, type ModelArtifact } from '../workers/node-agent/runtimes/training/artifact';
import { setArtifactStore } from '../workers/node-agent/runtimes/training/store';
import { runTrial } from '../workers/node-agent/runtimes/training/trial';
import { latencyStats, round, type Bench, intFlag } from './harness';

/**
 * `npm run bench -- training [--rows 100000] [--predictions 300]`
 *
 * 1. Training throughput, in-process and direct (no queue, no node): every tabular algorithm of
 *    TABULAR_CLASSIFICATION and TABULAR_REGRESSION on one generated table of `rows` rows
 *    (6 numeric, 2 categorical, 1 boolean, 1 integer feature; a binary label and a numeric target),
 *    through the trial runtime itself (split 80/20, transforms fitted, fit, held-out metrics, artifact
 *    written). The table is parsed once first (its own row); each algorithm's wall time then covers
 *    transforms + fit + validation + artifact, and rows/s = training rows / wall time. Hyper-parameters
 *    are scaled for 100k rows (see PLAN); decision_tree fits ml-cart on a 3,000-row sample (its
 *    split search is quadratic in rows), which its row says.
 * 2. Prediction latency through the whole system — `predict(input: { deployment })` over HTTP +
 *    GraphQL, the API, admission, BullMQ, a real node agent process (`dist/workers/node-agent/main.js`,
 *    its worker thread, its model cache), the recorder, back — one request at a time, `wait: 30`,
 *    one row each, against calling the same loaded model directly in this process, same rows, same
 *    run; p50/p99 and the ratio. The deployed model (xgboost, 50 rounds) is trained by a real
 *    training job on a 5,000-row slice uploaded through a signed URL.
 *
 * Database: BENCH_TRAINING_DATABASE_URL or postgres://postgres@127.0.0.1:5432/nimbus_bench_training
 * (created and migrated if missing; this run's tenant is deleted afterwards). Redis keys under a
 * random prefix, deleted afterwards; artifacts in a temporary directory, removed afterwards.
 */

const BENCH_DATABASE_URL = process.env.BENCH_TRAINING_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/nimbus_bench_training';
const AGENT_MAIN = join(__dirname, '..', 'workers', 'node-agent', 'main.js');

const PLAN: Array<{ task: Task; algorithm: string; hp: Hyperparameters; note?: string }> = [
  { task: 'TABULAR_CLASSIFICATION', algorithm: 'xgboost', hp: { rounds: 50, maxDepth: 6 } },
  { task: 'TABULAR_CLASSIFICATION', algorithm: 'logistic_regression', hp: { steps: 100 } },
  { task: 'TABULAR_CLASSIFICATION', algorithm: 'decision_tree', hp: { maxDepth: 8 }, note: 'ml-cart on a 3,000-row sample' },
  { task: 'TABULAR_CLASSIFICATION', algorithm: 'mlp', hp: { epochs: 3, batchSize: 128, hiddenUnits: 32 } },
  { task: 'TABULAR_REGRESSION', algorithm: 'xgboost', hp: { rounds: 50, maxDepth: 6, checkpointEvery: 25 } },
  { task: 'TABULAR_REGRESSION', algorithm: 'linear_regression', hp: {} },
  { task: 'TABULAR_REGRESSION', algorithm: 'decision_tree', hp: { maxDepth: 8 }, note: 'ml-cart on a 3,000-row sample' },
  { task: 'TABULAR_REGRESSION', algorithm: 'mlp', hp: { epochs: 3, batchSize: 128, hiddenUnits: 32 } },
];
const FEATURES = ['x1', 'x2', 'x3', 'x4', 'x5', 'x6', 'region', 'tier', 'member', 'visits'];


/** A table with signal in numeric, categorical and interaction terms. */
function generate(n: number, seed = 1): string {
  const r = seededRandom(seed);
  const regions = ['north', 'south', 'east', 'west', 'centre'];
  const tiers = ['basic', 'plus', 'pro'];
  const lines = [`${FEATURES.join(',')},label,y`];
  for (let i = 0; i < n; i++) {
    const x = Array.from({ length: 6 }, () => r() * 2 - 1);
    const region = Math.floor(r() * 5);
    const tier = Math.floor(r() * 3);
    const member = r() < 0.4;
    const visits = Math.floor(r() * 20);
    const score = 1.5 * x[0]! - x[1]! + 2 * x[2]! * x[3]! + 0.4 * (region - 2) + 0.6 * tier + (member ? 0.5 : -0.3) + 0.05 * visits + (r() - 0.5) * 1.2;
    const y = 100 + 20 * x[0]! + 15 * x[4]! ** 2 + 10 * tier + 3 * visits + (member ? 12 : 0) + (r() - 0.5) * 10;
    lines.push(`${x.map((v) => v.toFixed(4)).join(',')},${regions[region]},${tiers[tier]},${member},${visits},${score > 0.8 ? 'yes' : 'no'},${y.toFixed(2)}`);
  }
  return `${lines.join('\n')}\n`;
}

const GQL = {
  signUp: `mutation($input: SignUpInput!) { signUp(input: $input) { token tenant { id } } }`,
  createDataset: `mutation($input: CreateDatasetInput!) { createDataset(input: $input) { dataset { id } upload { id url headers } } }`,
  complete: `mutation($id: ID!) { completeDatasetUpload(uploadId: $id) { id rowCount } }`,
  train: `mutation($input: CreateTrainingJobInput!) { createTrainingJob(input: $input) { id } }`,
  job: `query($id: ID!) { trainingJob(id: $id) { status error { message } modelVersion { id version } } }`,
  deploy: `mutation($input: CreateDeploymentInput!) { createDeployment(input: $input) { id } }`,
  predict: `mutation($input: PredictInput!) { predict(input: $input) { id status output error { code message } metrics } }`,
};

const bench: Bench = async (args) => {
  const rowsN = intFlag(args, 'rows', 100_000);
  const predictions = intFlag(args, 'predictions', 300);
  // The deployed model trains on the first 5,000 rows; predictions use rows from 6,000 on.
  if (rowsN < 6000 + predictions) throw new Error(`--rows must be at least 6000 + --predictions (${6000 + predictions})`);
  const dataDir = mkdtempSync(join(tmpdir(), 'nimbus-bench-training-'));
  const store = new LocalArtifactStore(join(dataDir, 'artifacts'));
  setArtifactStore(store);
  const rows: Array<Record<string, string | number>> = [];
  const quiet = { signal: new AbortController().signal, reportProgress: () => undefined, log: () => undefined };
  try {
    // ---- 1. training throughput, in-process ----------------------------------------------------
    const csv = generate(rowsN);
    const key = 'tenants/bench/datasets/table.csv';
    await store.put(key, csv);
    let t0 = performance.now();
    const profile = await profileDataset(Readable.from([Buffer.from(csv)]), 'CSV', { maxBytes: 1e9, maxColumns: 500 });
    const profileS = (performance.now() - t0) / 1000;
    rows.push({ step: 'profile (validate + profile CSV)', rows: rowsN, 'wall s': round(profileS, 2), 'rows/s': Math.round(rowsN / profileS), metric: `${round(csv.length / 1e6, 1)} MB` });
    const columns = profile.columns.map((c) => ({ name: c.name, type: c.type }));
    t0 = performance.now();
    await readTable(await store.stream(key), 'CSV', columns);
    const parseS = (performance.now() - t0) / 1000;
    rows.push({ step: 'parse (typed table for training)', rows: rowsN, 'wall s': round(parseS, 2), 'rows/s': Math.round(rowsN / parseS), metric: '' });

    let i = 0;
    for (const p of PLAN) {
      const target = p.task === 'TABULAR_REGRESSION' ? 'y' : 'label';
      const spec: TrialSpec = {
        task: p.task, trial: i, algorithm: p.algorithm, hyperparameters: { ...defaultHyperparameters(p.task, p.algorithm), ...p.hp }, seed: 42,
        metric: target === 'y' ? 'rmse' : 'f1Macro', tenantId: 'bench', trainingJobId: 'bench', targetColumn: target, featureColumns: FEATURES,
        dataset: { versionId: 'bench', storageKey: key, format: 'CSV', columns }, transforms: [], holdout: 0.2,
        artifactKey: `tenants/bench/models/${i}.json`, checkpointKey: `tenants/bench/checkpoints/${i}.json`,
      };
      i++;
      if (i === 1) await runTrial({ ...spec, algorithm: 'decision_tree', hyperparameters: defaultHyperparameters(p.task, 'decision_tree') }, quiet); // caches the parsed table
      t0 = performance.now();
      const out = await runTrial(spec, quiet);
      const s = (performance.now() - t0) / 1000;
      const m = out.metrics;
      rows.push({
        step: `${p.task === 'TABULAR_REGRESSION' ? 'regression' : 'classification'} ${p.algorithm}${p.note ? ` (${p.note})` : ''}`,
        rows: out.rows.train, 'wall s': round(s, 2), 'rows/s': Math.round(out.rows.train / s),
        metric: target === 'y' ? `rmse ${m.rmse} (mean ${m.baselineRmse})` : `acc ${m.accuracy} (majority ${m.baselineAccuracy})`,
      });
    }
    const training = rows.slice();
    setArtifactStore(null);

    // ---- 2. prediction latency through predict(deployment:) vs the loaded model directly --------
    const latency = await predictionLatency(csv, dataDir, predictions);
    rows.push(...latency.rows);
    return {
      name: 'training',
      rows,
      summary: {
        machine: { cores: availableParallelism(), node: process.version },
        rows: rowsN,
        training: Object.fromEntries(training.map((r) => [r.step, { wallS: r['wall s'], rowsPerS: r['rows/s'], metric: r.metric }])),
        prediction: latency.summary,
      },
    };
  } finally {
    setArtifactStore(null);
    rmSync(dataDir, { recursive: true, force: true });
  }
};

async function predictionLatency(csv: string, dataDir: string, n: number) {
  const { createApp } = require('../src/app') as typeof import('../src/app');
  const { loadEnv } = require('../src/config/env') as typeof import('../src/config/env');
  const { prepareDatabase } = require('../src/platform/db/prepare') as typeof import('../src/platform/db/prepare');
  const { startServer } = require('../src/server') as typeof import('../src/server');
  const { startControlPlane } = require('../src/modules/compute/control-plane/control-plane') as typeof import('../src/modules/compute/control-plane/control-plane');
  const { attachTraining } = require('../src/modules/training/training.orchestrator') as typeof import('../src/modules/training/training.orchestrator');
  const { createLogger } = require('../src/platform/logger') as typeof import('../src/platform/logger');

  const prefix = `nimbus-bench-${randomBytes(4).toString('hex')}`;
  const base = {
    NODE_ENV: 'test', DATABASE_URL: BENCH_DATABASE_URL, REDIS_URL: process.env.REDIS_URL ?? 'redis://127.0.0.1:6379',
    REDIS_PREFIX: prefix, LOG_LEVEL: 'silent', SEED_DEMO: 'false', DATA_DIR: dataDir,
  };
  const env = loadEnv(base);
  await prepareDatabase(env);
  const owner = new Client({ connectionString: env.DATABASE_URL });
  await owner.connect();
  let app: App | undefined;
  let server: RunningServer | undefined;
  let cp: ControlPlane | undefined;
  let training: { stop(): Promise<void> } | undefined;
  let agent: ChildProcess | undefined;
  let tenantId: string | undefined;
  try {
    app = await createApp(env);
    server = await startServer(app, { port: 0, host: '127.0.0.1' });
    cp = await startControlPlane(env, { log: createLogger('silent'), metrics: app.metrics, localBus: app.bus });
    training = attachTraining(cp, app);
    agent = spawn(process.execPath, [AGENT_MAIN, '--name', `bench-${randomBytes(3).toString('hex')}`, '--hardware', 'CPU', '--devices', '2'], {
      env: { ...process.env, ...base, LOG_LEVEL: 'warn' }, stdio: ['ignore', 'ignore', 'inherit'],
    });
    const url = server.url;
    let token = '';
    const gql = async (query: string, variables: Record<string, unknown>) => {
      const res = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}) }, body: JSON.stringify({ query, variables }) });
      const body = (await res.json()) as { data?: any; errors?: unknown };
      if (body.errors) throw new Error(JSON.stringify(body.errors));
      return body.data;
    };
    const s = (await gql(GQL.signUp, { input: { email: `bench-${randomBytes(5).toString('hex')}@example.test`, password: 'bench password 0123', tenantName: 'Training Bench' } })).signUp;
    token = s.token;
    tenantId = s.tenant.id;
    await owner.query(`UPDATE tenants SET plan = 'ENTERPRISE' WHERE id = $1`, [tenantId]);
    app.services.tenancy.forgetTenantProfile(tenantId!);

    const slice = csv.split('\n').slice(0, 5001).join('\n') + '\n';
    const d = (await gql(GQL.createDataset, { input: { name: 'bench', format: 'CSV' } })).createDataset;
    const put = await fetch(d.upload.url, { method: 'PUT', body: slice, headers: d.upload.headers });
    if (put.status !== 200) throw new Error(`upload failed: ${put.status}`);
    const version = (await gql(GQL.complete, { id: d.upload.id })).completeDatasetUpload;
    const job = (await gql(GQL.train, {
      input: { datasetVersionId: version.id, modelName: 'bench', task: 'TABULAR_CLASSIFICATION', targetColumn: 'label', featureColumns: FEATURES, algorithm: 'xgboost', hyperparameters: { rounds: 50 }, seed: 1 },
    })).createTrainingJob;
    let done: any;
    for (let k = 0; k < 600; k++) {
      done = (await gql(GQL.job, { id: job.id })).trainingJob;
      if (['SUCCEEDED', 'FAILED', 'CANCELED'].includes(done.status)) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    if (done.status !== 'SUCCEEDED') throw new Error(`training failed: ${JSON.stringify(done)}`);
    const deployment = (await gql(GQL.deploy, { input: { name: 'bench', modelVersionId: done.modelVersion.id } })).createDeployment;

    const samples = csv.split('\n').slice(6000, 6000 + n).map((line) => {
      const v = line.split(',');
      return {
        x1: Number(v[0]), x2: Number(v[1]), x3: Number(v[2]), x4: Number(v[3]), x5: Number(v[4]), x6: Number(v[5]),
        region: v[6]!, tier: v[7]!, member: v[8] === 'true', visits: Number(v[9]),
      };
    });
    const call = (row: Record<string, unknown>) => gql(GQL.predict, { input: { deployment: deployment.id, input: { rows: [row] }, wait: 30 } });
    for (let k = 0; k < 20; k++) await call(samples[k % samples.length]!); // warm: model loaded and cached on the node
    const system: number[] = [];
    const nodeRun: number[] = [];
    for (const row of samples) {
      const t = performance.now();
      const p = (await call(row)).predict;
      system.push(performance.now() - t);
      if (p.status !== 'SUCCEEDED') throw new Error(`prediction ${p.status}: ${JSON.stringify(p.error)}`);
      nodeRun.push(Number(p.metrics?.runMs ?? NaN));
    }

    // The same artifact, loaded here, called directly with the same rows.
    const [{ artifact_key: artifactKey }] = (await owner.query(`SELECT artifact_key FROM model_versions WHERE id = $1`, [done.modelVersion.id])).rows;
    const local = new LocalArtifactStore(join(dataDir, 'artifacts'));
    const loaded = await loadArtifact(JSON.parse((await local.get(artifactKey)).toString()) as ModelArtifact);
    for (let k = 0; k < 20; k++) loaded.predict({ rows: [samples[k % samples.length]!] });
    const direct: number[] = [];
    for (const row of samples) {
      const t = performance.now();
      loaded.predict({ rows: [row] });
      direct.push(performance.now() - t);
    }
    loaded.dispose();
    const sys = latencyStats(system);
    const dir = latencyStats(direct);
    const node = latencyStats(nodeRun.filter(Number.isFinite));
    return {
      rows: [
        { step: 'predict(deployment:) via GraphQL + node agent', rows: n, 'p50 ms': sys.p50, 'p99 ms': sys.p99, metric: `node-side model run p50 ${node.p50} ms` },
        { step: 'loaded model called directly', rows: n, 'p50 ms': dir.p50, 'p99 ms': dir.p99, metric: '' },
        { step: 'ratio (system / direct)', rows: n, 'p50 ms': round(sys.p50 / dir.p50, 1), 'p99 ms': round(sys.p99 / dir.p99, 1), metric: `overhead p50 ${round(sys.p50 - dir.p50, 2)} ms` },
      ],
      summary: { requests: n, system: sys, direct: dir, nodeModelRunMs: node, ratioP50: round(sys.p50 / dir.p50, 1), ratioP99: round(sys.p99 / dir.p99, 1), overheadP50Ms: round(sys.p50 - dir.p50, 2) },
    };
  } finally {
    if (agent && agent.exitCode === null) {
      const exited = new Promise((r) => agent!.once('exit', r));
      agent.kill('SIGTERM');
      await Promise.race([exited, new Promise((r) => setTimeout(r, 5000))]);
      if (agent.exitCode === null) agent.kill('SIGKILL');
    }
    await training?.stop();
    await cp?.stop();
    await server?.close();
    if (app) {
      const keys = await app.redis.keys(`${prefix}*`);
      for (let k = 0; k < keys.length; k += 500) await app.redis.del(...keys.slice(k, k + 500)).catch(() => undefined);
      await app.close();
    }
    if (tenantId) await owner.query(`DELETE FROM tenants WHERE id = $1`, [tenantId]).catch(() => undefined);
    await owner.end();
  }
}

export default bench;
