/**
 * What the API, the control-plane orchestrator and the node runtimes agree on: tasks, algorithms
 * and their hyper-parameter spaces, the trial spec (a TRIAL job's input), the trial's output, the
 * feature schema and the model.predict input. Pure: no database, no libraries (node agents import it).
 */
import { z } from 'zod';
import { seededRandom } from '../../platform/random';

export const TASKS = ['TABULAR_CLASSIFICATION', 'TABULAR_REGRESSION', 'TEXT_CLASSIFICATION', 'FORECASTING'] as const;
export type Task = (typeof TASKS)[number];

export const COLUMN_TYPES = ['number', 'integer', 'boolean', 'category', 'text', 'datetime'] as const;
export type ColumnType = (typeof COLUMN_TYPES)[number];

export interface ColumnProfile {
  name: string;
  type: ColumnType;
  missingCount: number;
  distinctCount: number;
  /** distinctCount is a HyperLogLog estimate (more than DISTINCT_EXACT_CAP distinct values). */
  distinctApproximate: boolean;
  min: number | null;
  max: number | null;
  mean: number | null;
  /** Up to 20 most frequent values (category and boolean columns). */
  topValues?: Array<{ value: string; count: number }>;
}

// ---- transforms ---------------------------------------------------------------------------------

export const TRANSFORM_TYPES = ['SELECT', 'DROP', 'IMPUTE', 'ONE_HOT', 'STANDARDIZE', 'DATE_PARTS', 'TFIDF'] as const;
export const IMPUTE_STRATEGIES = ['MEAN', 'MEDIAN', 'MODE', 'CONSTANT'] as const;
export const DATE_PARTS = ['year', 'month', 'day', 'dayOfWeek', 'hour', 'dayOfYear'] as const;

export const transformSchema = z.strictObject({
  type: z.enum(TRANSFORM_TYPES),
  columns: z.array(z.string().min(1)).min(1).max(500),
  strategy: z.enum(IMPUTE_STRATEGIES).optional(),
  value: z.union([z.string(), z.number(), z.boolean()]).optional(),
  maxCategories: z.number().int().min(1).max(1000).optional(),
  maxFeatures: z.number().int().min(1).max(5000).optional(),
  ngram: z.number().int().min(1).max(2).optional(),
  parts: z.array(z.enum(DATE_PARTS)).min(1).optional(),
}).superRefine((t, ctx) => {
  if (t.type === 'IMPUTE' && !t.strategy) ctx.addIssue({ code: 'custom', path: ['strategy'], message: 'is required for IMPUTE' });
  if (t.type === 'IMPUTE' && t.strategy === 'CONSTANT' && t.value === undefined) {
    ctx.addIssue({ code: 'custom', path: ['value'], message: 'is required for the CONSTANT strategy' });
  }
});
export type TransformSpec = z.infer<typeof transformSchema>;

// ---- algorithms and their search spaces ----------------------------------------------------------

export type ParamSpec =
  | { type: 'int'; min: number; max: number; default: number; log?: boolean; fixed?: boolean }
  | { type: 'float'; min: number; max: number; default: number; log?: boolean; fixed?: boolean }
  | { type: 'choice'; values: ReadonlyArray<string | number | boolean>; default: string | number | boolean; fixed?: boolean };
export type ParamSpace = Record<string, ParamSpec>;
export type Hyperparameters = Record<string, string | number | boolean>;

const xgboost: ParamSpace = {
  rounds: { type: 'int', min: 20, max: 200, default: 100 },
  maxDepth: { type: 'int', min: 2, max: 8, default: 5 },
  eta: { type: 'float', min: 0.03, max: 0.3, default: 0.1, log: true },
  subsample: { type: 'float', min: 0.6, max: 1, default: 0.9 },
  colsampleBytree: { type: 'float', min: 0.6, max: 1, default: 1 },
  minChildWeight: { type: 'float', min: 1, max: 10, default: 1, log: true },
  /** Rounds per checkpoint (boosting continues from the saved margin on resume). */
  checkpointEvery: { type: 'int', min: 1, max: 10_000, default: 50, fixed: true },
};
const mlp: ParamSpace = {
  hiddenUnits: { type: 'choice', values: [16, 32, 64], default: 32 },
  layers: { type: 'int', min: 1, max: 2, default: 1 },
  epochs: { type: 'int', min: 10, max: 60, default: 30 },
  learningRate: { type: 'float', min: 0.001, max: 0.03, default: 0.01, log: true },
  batchSize: { type: 'choice', values: [32, 64, 128], default: 64 },
  dropout: { type: 'float', min: 0, max: 0.3, default: 0 },
  /** Epochs per checkpoint. */
  checkpointEvery: { type: 'int', min: 1, max: 10_000, default: 5, fixed: true },
};
const logistic: ParamSpace = {
  steps: { type: 'int', min: 100, max: 1000, default: 300 },
  /** Step size on the mean gradient (the library sums gradients, so it is divided by the row count). */
  learningRate: { type: 'float', min: 0.05, max: 2, default: 0.5, log: true },
};
const tree: ParamSpace = {
  maxDepth: { type: 'int', min: 2, max: 12, default: 6 },
  minNumSamples: { type: 'int', min: 2, max: 30, default: 5 },
};
const text: ParamSpace = {
  maxFeatures: { type: 'int', min: 100, max: 1000, default: 300 },
  ngram: { type: 'choice', values: [1, 2], default: 1 },
};
const logChoice = (d: boolean): ParamSpec => ({ type: 'choice', values: [true, false], default: d });
/** Seasonal period (0: detected from the series). */
const seasonality: ParamSpec = { type: 'int', min: 0, max: 366, default: 0, fixed: true };

export const ALGORITHMS: Record<Task, Record<string, ParamSpace>> = {
  TABULAR_CLASSIFICATION: { xgboost, logistic_regression: logistic, decision_tree: tree, mlp },
  TABULAR_REGRESSION: {
    xgboost, decision_tree: tree, mlp,
    linear_regression: { l2: { type: 'float', min: 1e-6, max: 10, default: 1e-3, log: true } },
  },
  TEXT_CLASSIFICATION: {
    logistic_regression: { ...logistic, ...text },
    mlp: { ...mlp, ...text, epochs: { type: 'int', min: 10, max: 40, default: 20 } },
    xgboost: { ...xgboost, ...text, rounds: { type: 'int', min: 20, max: 150, default: 60 } },
  },
  FORECASTING: {
    sarima: {
      p: { type: 'int', min: 0, max: 2, default: 0 }, d: { type: 'int', min: 0, max: 1, default: 1 }, q: { type: 'int', min: 0, max: 2, default: 1 },
      P: { type: 'int', min: 0, max: 1, default: 0 }, D: { type: 'int', min: 0, max: 1, default: 1 }, Q: { type: 'int', min: 0, max: 1, default: 1 },
      log: logChoice(true), seasonality,
    },
    auto_arima: { log: logChoice(false), seasonality },
    ets: { spec: { type: 'choice', values: ['ZZZ', 'AAA', 'AAN', 'MAM', 'ZZN'], default: 'ZZZ' }, log: logChoice(false), seasonality },
    mstl: { log: logChoice(true), seasonality },
  },
};

export const algorithmsFor = (task: Task) => Object.keys(ALGORITHMS[task]);

/** Validates user-given hyper-parameters for one algorithm; returns the problem or null. */
export function checkHyperparameters(task: Task, algorithm: string, hp: Record<string, unknown>): string | null {
  const space = ALGORITHMS[task][algorithm];
  if (!space) return `unknown algorithm "${algorithm}" for ${task}; one of ${algorithmsFor(task).join(', ')}`;
  for (const [k, v] of Object.entries(hp)) {
    const spec = space[k];
    if (!spec) return `${k}: unknown hyper-parameter of ${algorithm}; known: ${Object.keys(space).join(', ')}`;
    if (spec.type === 'choice') {
      if (!spec.values.includes(v as string)) return `${k}: must be one of ${spec.values.join(', ')}`;
    } else if (typeof v !== 'number' || !Number.isFinite(v) || (spec.type === 'int' && !Number.isInteger(v))) {
      return `${k}: must be ${spec.type === 'int' ? 'an integer' : 'a number'}`;
    } else if (!spec.fixed && (v < spec.min || v > spec.max)) {
      return `${k}: must be between ${spec.min} and ${spec.max}`;
    } else if (spec.fixed && v < spec.min) {
      return `${k}: must be at least ${spec.min}`;
    }
  }
  return null;
}

export function defaultHyperparameters(task: Task, algorithm: string): Hyperparameters {
  return Object.fromEntries(Object.entries(ALGORITHMS[task][algorithm] ?? {}).map(([k, s]) => [k, s.default]));
}

export const mixSeed = (seed: number, salt: number) => (Math.imul(seed ^ 0x9e3779b9, 0x85ebca6b) ^ Math.imul(salt + 1, 0xc2b2ae35)) >>> 0;

/** A random point of the space (fixed parameters keep their default). */
export function sampleHyperparameters(task: Task, algorithm: string, random: () => number): Hyperparameters {
  const out: Hyperparameters = {};
  for (const [k, s] of Object.entries(ALGORITHMS[task][algorithm])) {
    if (s.fixed) out[k] = s.default;
    else if (s.type === 'choice') out[k] = s.values[Math.floor(random() * s.values.length)] as string | number | boolean;
    else {
      const u = random();
      if (s.type === 'int' && !s.log) out[k] = Math.min(s.max, s.min + Math.floor(u * (s.max - s.min + 1)));
      else {
        const v = s.log ? Math.exp(Math.log(s.min) + u * (Math.log(s.max) - Math.log(s.min))) : s.min + u * (s.max - s.min);
        out[k] = s.type === 'int' ? Math.round(v) : Number(v.toPrecision(4));
      }
    }
  }
  return out;
}

/**
 * The search: trial i uses the algorithms round-robin, so the first k trials cover every
 * algorithm (with its defaults, a strong start); later trials sample the space at random from
 * the job's seed. Deterministic: trial i of a job is always the same.
 */
export function planTrial(task: Task, algorithms: string[], seed: number, i: number, fixed?: Hyperparameters): { algorithm: string; hyperparameters: Hyperparameters } {
  const algorithm = algorithms[i % algorithms.length]!;
  const base = i < algorithms.length ? defaultHyperparameters(task, algorithm) : sampleHyperparameters(task, algorithm, seededRandom(mixSeed(seed, i)));
  return { algorithm, hyperparameters: { ...base, ...(fixed ?? {}) } };
}

// ---- metrics --------------------------------------------------------------------------------------

export const HIGHER_IS_BETTER = new Set(['accuracy', 'f1Macro', 'auc', 'r2']);
export const TASK_METRICS: Record<Task, readonly string[]> = {
  TABULAR_CLASSIFICATION: ['f1Macro', 'accuracy', 'auc', 'logLoss'],
  TEXT_CLASSIFICATION: ['f1Macro', 'accuracy', 'auc', 'logLoss'],
  TABULAR_REGRESSION: ['rmse', 'mae', 'r2'],
  FORECASTING: ['smape', 'mape', 'rmse', 'mae'],
};
export const defaultMetric = (task: Task) => TASK_METRICS[task][0]!;

/** Is a better than b on this metric (missing values lose)? */
export function better(metric: string, a: number | undefined, b: number | undefined): boolean {
  if (a === undefined || !Number.isFinite(a)) return false;
  if (b === undefined || !Number.isFinite(b)) return true;
  return HIGHER_IS_BETTER.has(metric) ? a > b : a < b;
}

// ---- trial spec and output ------------------------------------------------------------------------

export interface TrialSpec {
  task: Task;
  trial: number;
  algorithm: string;
  hyperparameters: Hyperparameters;
  seed: number;
  metric: string;
  tenantId: string;
  trainingJobId: string;
  dataset: { versionId: string; storageKey: string; format: 'CSV' | 'JSONL'; columns: Array<Pick<ColumnProfile, 'name' | 'type'>> };
  targetColumn: string;
  featureColumns?: string[];
  textColumn?: string;
  timeColumn?: string;
  horizon?: number;
  transforms: TransformSpec[];
  /** Fraction of rows held out for validation (the last ones, in time order, for forecasting). */
  holdout: number;
  artifactKey: string;
  checkpointKey: string;
}

export interface FeatureSpec {
  name: string;
  type: ColumnType;
  /** null is accepted (an imputer fills it). */
  nullable: boolean;
}

export interface FeatureSchema {
  task: Task;
  features: FeatureSpec[];
  target: { name: string; type: ColumnType; classes?: string[] };
  timeColumn?: string;
  /** Forecasting: the horizon the model was validated on (predict accepts 1..365). */
  horizon?: number;
}

export interface TrialOutput {
  algorithm: string;
  hyperparameters: Hyperparameters;
  metrics: Record<string, number>;
  artifactKey: string;
  featureSchema: FeatureSchema;
  rows: { train: number; valid: number };
  features: number;
  /** The checkpoint step this attempt resumed from (0: started fresh). */
  resumedFromStep: number;
}

/** The input of a model.predict job (resolved by the API from a deployment). */
export interface ModelPredictInput {
  modelVersionId: string;
  version: number;
  artifactKey: string;
  task: Task;
  rows?: Array<Record<string, unknown>>;
  horizon?: number;
}

export interface ModelPrediction {
  label?: string;
  probabilities?: Record<string, number>;
  value?: number;
  lower95?: number;
  upper95?: number;
  step?: number;
  timestamp?: string;
}

export const MAX_PREDICT_ROWS = 1000;
