/**
 * training.trial: one algorithm × hyper-parameters of a training job. Reads the dataset version
 * from the artifact store, splits it (seeded; stratified for classification; time-ordered for
 * forecasting), fits the transforms on the training split only, trains, validates against a
 * trivial baseline, writes the model artifact and returns metrics, feature schema and artifact key.
 */
import { readTable } from '../../../../src/modules/training/dataset-parser';
import { seededRandom } from '../../../../src/platform/random';
import { mixSeed, type TrialOutput, type TrialSpec } from '../../../../src/modules/training/training.contract';
import { canceled, RuntimeError, type JobContext } from '../types';
import { ARTIFACT_FORMAT, type ForecastArtifact, type SupervisedArtifact } from './artifact';
import { backtest, forecaster, seasonOf } from './forecasting';
import { asBaseline, classificationMetrics, regressionMetrics } from './metrics';
import { fitModel, type Checkpointer } from './models';
import { artifactStore } from './store';
import { applyPipeline, fitPipeline, selectFeatures, type Table, type Value } from './transforms';

const STANDARDIZED = new Set(['logistic_regression', 'linear_regression', 'mlp']);

/** Parsed tables of this thread, by storage key (trials of one job usually land on the same threads). */
const tables = new Map<string, Promise<{ rowCount: number; columns: Table }>>();

async function loadTable(spec: TrialSpec): Promise<{ rowCount: number; columns: Table }> {
  const key = spec.dataset.storageKey;
  let t = tables.get(key);
  if (!t) {
    t = (async () => readTable(await artifactStore().stream(key), spec.dataset.format, spec.dataset.columns))();
    t.catch(() => tables.delete(key));
    tables.set(key, t);
    while (tables.size > 2) tables.delete(tables.keys().next().value!);
  }
  return t;
}

/** Checkpoints of this trial under its key; one from another configuration is ignored. */
function checkpointer(spec: TrialSpec): Checkpointer {
  const store = artifactStore();
  const fingerprint = JSON.stringify([spec.algorithm, spec.hyperparameters, spec.seed, spec.dataset.versionId]);
  return {
    async load() {
      if (!(await store.exists(spec.checkpointKey))) return null;
      const c = JSON.parse((await store.get(spec.checkpointKey)).toString()) as { fingerprint: string; step: number; state: unknown };
      return c.fingerprint === fingerprint ? { step: c.step, state: c.state } : null;
    },
    async save(step, state) {
      await store.put(spec.checkpointKey, JSON.stringify({ fingerprint, step, state }), { contentType: 'application/json' });
    },
  };
}

function shuffle<T>(xs: T[], random: () => number): T[] {
  for (let i = xs.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    [xs[i], xs[j]] = [xs[j]!, xs[i]!];
  }
  return xs;
}

export async function runTrial(spec: TrialSpec, ctx: JobContext): Promise<TrialOutput> {
  ctx.log(`trial ${spec.trial}: ${spec.algorithm} ${JSON.stringify(spec.hyperparameters)}`);
  const table = await loadTable(spec);
  ctx.log(`dataset version ${spec.dataset.versionId}: ${table.rowCount} rows`);
  ctx.reportProgress(0.05);
  if (ctx.signal.aborted) throw canceled();
  const out = spec.task === 'FORECASTING' ? await forecastTrial(spec, table.columns, ctx) : await supervisedTrial(spec, table.columns, table.rowCount, ctx);
  await artifactStore().delete(spec.checkpointKey).catch(() => undefined);
  ctx.reportProgress(1);
  ctx.log(`validation: ${Object.entries(out.metrics).map(([k, v]) => `${k}=${v}`).join(' ')}`);
  return out;
}

async function supervisedTrial(spec: TrialSpec, table: Table, rowCount: number, ctx: JobContext): Promise<TrialOutput> {
  const classification = spec.task !== 'TABULAR_REGRESSION';
  const target = table.get(spec.targetColumn)!;
  const rows = Array.from({ length: rowCount }, (_, i) => i).filter((i) => target[i] !== null && target[i] !== undefined);
  if (rows.length < rowCount) ctx.log(`${rowCount - rows.length} rows without a target value were left out`);
  const random = seededRandom(mixSeed(spec.seed, 7));
  let train: number[] = [];
  let valid: number[] = [];
  if (classification) {
    const groups = new Map<string, number[]>();
    for (const i of rows) {
      const k = String(target[i]);
      const g = groups.get(k);
      if (g) g.push(i);
      else groups.set(k, [i]);
    }
    for (const [, g] of [...groups].sort((a, b) => (a[0] < b[0] ? -1 : 1))) {
      shuffle(g, random);
      const v = g.length >= 2 ? Math.max(1, Math.round(g.length * spec.holdout)) : 0;
      valid.push(...g.slice(0, v));
      train.push(...g.slice(v));
    }
  } else {
    const all = shuffle([...rows], random);
    const v = Math.max(1, Math.round(all.length * spec.holdout));
    valid = all.slice(0, v);
    train = all.slice(v);
  }
  if (train.length < 2 || valid.length < 1) throw new RuntimeError('JOB_FAILED', `too few rows to train and validate (${rows.length})`);

  const exclude = [spec.targetColumn, ...(spec.timeColumn ? [spec.timeColumn] : [])];
  const featureColumns = spec.task === 'TEXT_CLASSIFICATION' ? spec.featureColumns ?? [spec.textColumn!] : spec.featureColumns;
  const columns = selectFeatures(spec.dataset.columns, exclude, featureColumns, spec.transforms);
  if (!columns.length) throw new RuntimeError('JOB_FAILED', 'no feature columns are left after select/drop');
  const hp = spec.hyperparameters;
  const pipeline = fitPipeline(table, train, columns, spec.transforms, {
    standardize: STANDARDIZED.has(spec.algorithm),
    textMaxFeatures: spec.task === 'TEXT_CLASSIFICATION' ? Number(hp.maxFeatures ?? 300) : 100,
    textNgram: spec.task === 'TEXT_CLASSIFICATION' ? Number(hp.ngram ?? 1) : 1,
    maxCategories: 20,
  });
  const Xtrain = applyPipeline(pipeline, table, train);
  let Xvalid = applyPipeline(pipeline, table, valid);
  ctx.log(`split: ${train.length} training rows, ${valid.length} held out; ${pipeline.featureNames.length} features from ${columns.length} columns`);

  let classes: string[] | undefined;
  let ytrain: number[];
  let yvalid: number[];
  if (classification) {
    classes = [...new Set(train.map((i) => String(target[i])))].sort();
    const index = new Map(classes.map((c, i) => [c, i]));
    const known = valid.map((i) => index.has(String(target[i])));
    if (known.some((k) => !k)) {
      ctx.log(`${known.filter((k) => !k).length} held-out rows have a class absent from the training split and were left out`);
      Xvalid = Xvalid.filter((_, j) => known[j]);
      valid = valid.filter((_, j) => known[j]);
    }
    ytrain = train.map((i) => index.get(String(target[i]))!);
    yvalid = valid.map((i) => index.get(String(target[i]))!);
    if (classes.length < 2) throw new RuntimeError('JOB_FAILED', `the target column "${spec.targetColumn}" has a single class in the training split`);
  } else {
    ytrain = train.map((i) => Number(target[i]));
    yvalid = valid.map((i) => Number(target[i]));
  }

  const k = classes?.length ?? 1;
  const model = await fitModel(spec.algorithm, classification ? 'classification' : 'regression', Xtrain, ytrain, k, hp, {
    signal: ctx.signal, seed: spec.seed, log: ctx.log, checkpoint: checkpointer(spec),
    progress: (f) => ctx.reportProgress(0.1 + 0.8 * f),
  });
  if (ctx.signal.aborted) throw canceled();

  let metrics: Record<string, number>;
  let residualStd: number | undefined;
  if (classification) {
    metrics = classificationMetrics(yvalid, model.predictProba!(Xvalid), k);
    const freq = Array.from({ length: k }, (_, c) => ytrain.filter((y) => y === c).length / ytrain.length);
    metrics = { ...metrics, ...asBaseline(classificationMetrics(yvalid, yvalid.map(() => freq), k)) };
  } else {
    const pred = model.predict!(Xvalid);
    metrics = regressionMetrics(yvalid, pred);
    residualStd = metrics.rmse;
    const mean = ytrain.reduce((a, b) => a + b, 0) / ytrain.length;
    metrics = { ...metrics, ...asBaseline(regressionMetrics(yvalid, yvalid.map(() => mean))) };
  }
  const targetType = spec.dataset.columns.find((c) => c.name === spec.targetColumn)!.type;
  const featureSchema = {
    task: spec.task, features: pipeline.columns, target: { name: spec.targetColumn, type: targetType, ...(classes ? { classes } : {}) },
  };
  const artifact: SupervisedArtifact = {
    format: ARTIFACT_FORMAT, task: spec.task, algorithm: spec.algorithm, hyperparameters: hp, featureSchema, pipeline, classes, residualStd,
    model: model.toJSON(),
  };
  model.dispose?.();
  await artifactStore().put(spec.artifactKey, JSON.stringify(artifact), { contentType: 'application/json' });
  return {
    algorithm: spec.algorithm, hyperparameters: hp, metrics, artifactKey: spec.artifactKey, featureSchema,
    rows: { train: train.length, valid: valid.length }, features: pipeline.featureNames.length, resumedFromStep: model.resumedFrom ?? 0,
  };
}

async function forecastTrial(spec: TrialSpec, table: Table, ctx: JobContext): Promise<TrialOutput> {
  const time = table.get(spec.timeColumn!)!;
  const target = table.get(spec.targetColumn)!;
  const order = time.map((t, i) => [t, i] as [Value, number]).filter(([t]) => t !== null).sort((a, b) => Number(a[0]) - Number(b[0])).map(([, i]) => i);
  const y: number[] = [];
  let filled = 0;
  for (const i of order) {
    const v = target[i];
    if (v === null || v === undefined) {
      if (!y.length) continue;
      y.push(y[y.length - 1]!);
      filled++;
    } else y.push(Number(v));
  }
  if (filled) ctx.log(`${filled} missing values were filled with the previous value`);
  const h = spec.horizon ?? 1;
  const season = seasonOf(y, spec.hyperparameters);
  const positive = y.every((v) => v > 0);
  ctx.log(`series of ${y.length} points${season ? `, seasonal period ${season}` : ', no seasonal period'}; horizon ${h}`);
  const fit = forecaster(spec.algorithm, spec.hyperparameters, season, positive);
  const minTrain = Math.max(8, season ? 2 * season + 4 : 8);
  let result: ReturnType<typeof backtest>;
  try {
    result = backtest(fit, y, h, minTrain);
  } catch (err) {
    throw new RuntimeError('JOB_FAILED', `${spec.algorithm}: ${(err as Error).message}`);
  }
  ctx.reportProgress(0.8);
  ctx.log(`backtest over ${result.origins} origin(s) of ${h} steps`);
  fit(y, h); // the model must also fit the whole series, as prediction will
  const isoTimes = spec.dataset.columns.find((c) => c.name === spec.timeColumn)?.type === 'datetime'
    ? order.slice(-3).map((i) => new Date(Number(time[i])).toISOString()) : undefined;
  const featureSchema = {
    task: spec.task, features: [], target: { name: spec.targetColumn, type: spec.dataset.columns.find((c) => c.name === spec.targetColumn)!.type },
    timeColumn: spec.timeColumn, horizon: h,
  };
  const artifact: ForecastArtifact = {
    format: ARTIFACT_FORMAT, task: 'FORECASTING', algorithm: spec.algorithm, hyperparameters: spec.hyperparameters, featureSchema,
    season: season ?? null, positive, series: y.slice(-5000), timestamps: isoTimes,
  };
  await artifactStore().put(spec.artifactKey, JSON.stringify(artifact), { contentType: 'application/json' });
  return {
    algorithm: spec.algorithm, hyperparameters: { ...spec.hyperparameters, seasonality: season ?? 0 }, metrics: result.metrics,
    artifactKey: spec.artifactKey, featureSchema, rows: { train: y.length - h, valid: h * result.origins }, features: 0, resumedFromStep: 0,
  };
}
