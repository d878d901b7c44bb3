/* eslint-disable @typescript-eslint/no-require-imports */
/**
 * Tabular learners from maintained libraries: gradient-boosted trees (ml-xgboost, wasm), logistic
 * regression (ml-logistic-regression), ridge linear regression (ml-matrix's solver), decision trees
 * (ml-cart) and the MLP (tfjs, mlp.ts). Every model serialises to JSON for the artifact.
 */
import { canceled } from '../types';
import { seededRandom } from '../../../../src/platform/random';
import type { Hyperparameters } from '../../../../src/modules/training/training.contract';
import { fitMlp, loadMlp } from './mlp';

export type LearnerKind = 'classification' | 'regression';

export interface Checkpointer {
  load(): Promise<{ step: number; state: any } | null>;
  save(step: number, state: unknown): Promise<void>;
}

export interface FitContext {
  signal: AbortSignal;
  seed: number;
  log(line: string): void;
  /** Fraction of this model's fitting done, in [0, 1]. */
  progress(f: number): void;
  checkpoint: Checkpointer;
}

export interface TrainedModel {
  /** Classification: class probabilities per row (k columns). */
  predictProba?(X: number[][]): number[][];
  /** Regression: one value per row. */
  predict?(X: number[][]): number[];
  toJSON(): unknown;
  dispose?(): void;
  /** The checkpoint step this fit resumed from (0: from scratch). */
  resumedFrom?: number;
}

// ---- library handles ----------------------------------------------------------------------------

interface XGBoostModel {
  model: number;
  options: Record<string, unknown>;
  train(X: number[][], y: number[]): void;
  predict(X: number[][]): Array<number | number[]>;
  toJSON(): { name: string; model: number[]; options: Record<string, unknown> };
  free(): void;
}
interface XGBoostCtor {
  new (options: Record<string, unknown>): XGBoostModel;
  load(model: { name: string; model: ArrayLike<number>; options: Record<string, unknown> }): XGBoostModel;
}

/** The emscripten module inside ml-xgboost. */
interface XGBoostWasm {
  _malloc(bytes: number): number;
  _free(ptr: number): void;
  _create_model(x: number, y: number, rows: number, cols: number): number;
  HEAPF32: Float32Array;
  cwrap(name: string, ret: string | null, args: string[]): (...a: unknown[]) => unknown;
}

let xgbPromise: Promise<{ XGB: XGBoostCtor; wasm: XGBoostWasm }> | null = null;
/** ml-xgboost compiles its wasm on require; its loader notes on stderr that it fell back from streaming compile. */
function xgboostLib(): Promise<{ XGB: XGBoostCtor; wasm: XGBoostWasm }> {
  xgbPromise ??= (async () => {
    const warn = console.warn;
    console.warn = () => undefined;
    try {
      const XGB = await (require('ml-xgboost') as Promise<XGBoostCtor>);
      const wasm = await (require('ml-xgboost/dist/wasm/xgboost.js') as { isReady: Promise<XGBoostWasm> }).isReady;
      return { XGB, wasm };
    } finally {
      console.warn = warn;
    }
  })();
  return xgbPromise;
}
export const loadXGBoost = async () => (await xgboostLib()).XGB;

/**
 * XGBoost.train passes the training matrix to wasm as a ccall 'array', i.e. on the 5 MB wasm
 * stack, which overflows past ~1.3M values (80k rows × 16 features). This does what train does
 * with the matrix copied to the heap instead (create_model copies it into its DMatrix).
 */
function trainBooster(XGB: XGBoostCtor, wasm: XGBoostWasm, options: Record<string, unknown>, X: number[][], y: number[]): XGBoostModel {
  const booster = new XGB(options);
  const rows = X.length;
  const cols = X[0]?.length ?? 0;
  const px = wasm._malloc(rows * cols * 4);
  const py = wasm._malloc(rows * 4);
  let ptr: number;
  try {
    for (let i = 0; i < rows; i++) wasm.HEAPF32.set(X[i]!, (px >> 2) + i * cols);
    wasm.HEAPF32.set(y, py >> 2);
    ptr = wasm._create_model(px, py, rows, cols);
  } finally {
    wasm._free(px);
    wasm._free(py);
  }
  const setParam = wasm.cwrap('set_param', null, ['number', 'string', 'string']);
  for (const [k, v] of Object.entries(booster.options)) if (k !== 'iterations' && k !== 'labels') setParam(ptr, k, String(v));
  wasm.cwrap('train_full_model', null, ['number', 'number'])(ptr, Number(options.iterations));
  booster.model = ptr;
  return booster;
}

type MatrixCtor = typeof import('ml-matrix').Matrix;
const mlMatrix = () => require('ml-matrix') as typeof import('ml-matrix');
interface LogRegModel {
  train(X: InstanceType<MatrixCtor>, Y: InstanceType<MatrixCtor>): void;
  classifiers: Array<{ testScores(X: InstanceType<MatrixCtor>): number[] }>;
  toJSON(): unknown;
}
type LogRegCtor = { new (o: { numSteps: number; learningRate: number }): LogRegModel; load(json: unknown): LogRegModel };
interface CartModel {
  train(X: number[][], y: number[]): void;
  predict(X: number[][]): number[];
  root: { classify(row: number[]): { to1DArray(): number[] } | number };
  toJSON(): unknown;
}
interface CartModule {
  DecisionTreeClassifier: { new (o: Record<string, unknown>): CartModel; load(json: unknown): CartModel };
  DecisionTreeRegression: { new (o: Record<string, unknown>): CartModel; load(json: unknown): CartModel };
}

const num = (hp: Hyperparameters, k: string) => Number(hp[k]);
const withBias = (X: number[][]) => X.map((r) => [...r, 1]);
const b64 = (bytes: ArrayLike<number>) => Buffer.from(Int8Array.from(bytes).buffer).toString('base64');
const unb64 = (s: string) => new Uint8Array(Buffer.from(s, 'base64'));
const yieldNow = () => new Promise<void>((r) => setImmediate(r));

/** ml-cart's split search grows with the square of the rows: trees see a seeded sample of at most this many. */
export const TREE_MAX_ROWS = 3000;

// ---- fit / load -----------------------------------------------------------------------------------

export async function fitModel(algorithm: string, kind: LearnerKind, X: number[][], y: number[], k: number, hp: Hyperparameters, fc: FitContext): Promise<TrainedModel> {
  if (fc.signal.aborted) throw canceled();
  switch (algorithm) {
    case 'xgboost': return fitXgboost(kind, X, y, k, hp, fc);
    case 'logistic_regression': return fitLogistic(X, y, k, hp);
    case 'linear_regression': return fitLinear(X, y, hp);
    case 'decision_tree': return fitTree(kind, X, y, k, hp, fc);
    case 'mlp': return fitMlp(kind, X, y, k, hp, fc);
    default: throw new Error(`unknown algorithm ${algorithm}`);
  }
}

export async function loadModel(algorithm: string, kind: LearnerKind, json: any, k: number): Promise<TrainedModel> {
  switch (algorithm) {
    case 'xgboost': return xgboostModel(kind, k, await loadXGBoost(), json);
    case 'logistic_regression': return logisticModel((require('ml-logistic-regression') as LogRegCtor).load(json.model), k);
    case 'linear_regression': return linearModel(json.weights as number[]);
    case 'decision_tree': {
      const cart = require('ml-cart') as CartModule;
      return treeModel(kind, k, kind === 'classification' ? cart.DecisionTreeClassifier.load(json.model) : cart.DecisionTreeRegression.load(json.model));
    }
    case 'mlp': return loadMlp(kind, json);
    default: throw new Error(`unknown algorithm ${algorithm}`);
  }
}

// ---- xgboost --------------------------------------------------------------------------------------

function xgbOptions(kind: LearnerKind, k: number, hp: Hyperparameters, seed: number, rounds: number): Record<string, unknown> {
  return {
    booster: 'gbtree',
    objective: kind === 'regression' ? 'reg:linear' : k === 2 ? 'binary:logistic' : 'multi:softprob',
    ...(kind === 'classification' && k > 2 ? { num_class: k } : {}),
    max_depth: num(hp, 'maxDepth'), eta: num(hp, 'eta'), subsample: num(hp, 'subsample'),
    colsample_bytree: num(hp, 'colsampleBytree'), min_child_weight: num(hp, 'minChildWeight'),
    seed, silent: 1, nthread: 1, iterations: rounds,
  };
}

/**
 * Classification boosts all rounds in one call. Regression boosts in chunks of `checkpointEvery`
 * rounds, each chunk fitted to the residuals of the chunks before (with squared loss this is
 * exactly continued boosting), and checkpoints after each chunk, so a lost attempt resumes there.
 */
async function fitXgboost(kind: LearnerKind, X: number[][], y: number[], k: number, hp: Hyperparameters, fc: FitContext): Promise<TrainedModel> {
  const { XGB, wasm } = await xgboostLib();
  const rounds = num(hp, 'rounds');
  if (kind === 'classification') {
    const booster = trainBooster(XGB, wasm, xgbOptions(kind, k, hp, fc.seed, rounds), X, y);
    fc.progress(1);
    const j = booster.toJSON();
    booster.free();
    return xgboostModel(kind, k, XGB, { boosters: [b64(j.model)], options: j.options });
  }
  const every = Math.max(1, num(hp, 'checkpointEvery'));
  const chunks = Math.ceil(rounds / every);
  const state: { boosters: string[]; options: Record<string, unknown>; baseScore: number } = {
    boosters: [], options: {}, baseScore: y.reduce((a, b) => a + b, 0) / y.length,
  };
  let resumedFrom = 0;
  const saved = await fc.checkpoint.load();
  if (saved) {
    Object.assign(state, saved.state);
    resumedFrom = saved.step;
    fc.log(`resumed from checkpoint at step ${saved.step} (round ${Math.min(rounds, saved.step * every)} of ${rounds})`);
  }
  const partial = xgboostModel('regression', 1, XGB, state);
  const current = state.boosters.length ? partial.predict!(X) : y.map(() => state.baseScore);
  partial.dispose?.();
  for (let c = state.boosters.length; c < chunks; c++) {
    if (fc.signal.aborted) throw canceled();
    const n = Math.min(every, rounds - c * every);
    const opts = { ...xgbOptions(kind, k, hp, fc.seed + c, n), base_score: c === 0 ? state.baseScore : 0 };
    const booster = trainBooster(XGB, wasm, opts, X, c === 0 ? y : y.map((v, i) => v - current[i]!));
    const p = booster.predict(X) as number[];
    for (let i = 0; i < p.length; i++) current[i] = c === 0 ? p[i]! : current[i]! + p[i]!;
    const j = booster.toJSON();
    booster.free();
    state.boosters.push(b64(j.model));
    state.options = j.options;
    fc.progress((c + 1) / chunks);
    if (c + 1 < chunks) {
      await fc.checkpoint.save(c + 1, state);
      fc.log(`checkpoint saved at step ${c + 1} (round ${(c + 1) * every} of ${rounds})`);
    }
    await yieldNow();
  }
  return { ...xgboostModel(kind, k, XGB, state), resumedFrom };
}

function xgboostModel(kind: LearnerKind, k: number, XGB: XGBoostCtor, json: { boosters: string[]; options: Record<string, unknown> }): TrainedModel {
  const boosters = json.boosters.map((m) => XGB.load({ name: 'ml-xgboost', model: unb64(m), options: { ...json.options } }));
  const raw = (X: number[][]) => boosters.map((b) => b.predict(X));
  return {
    predictProba: kind === 'classification' ? (X) => raw(X)[0]!.map((p) => (k === 2 ? [1 - (p as number), p as number] : (p as number[]))) : undefined,
    predict: kind === 'regression' ? (X) => {
      const parts = raw(X) as number[][];
      return X.map((_, i) => parts.reduce((a, p) => a + p[i]!, 0));
    } : undefined,
    toJSON: () => json,
    dispose: () => boosters.forEach((b) => b.free()),
  };
}

// ---- logistic and linear regression --------------------------------------------------------------

function fitLogistic(X: number[][], y: number[], k: number, hp: Hyperparameters): TrainedModel {
  const { Matrix } = mlMatrix();
  const LogisticRegression = require('ml-logistic-regression') as LogRegCtor;
  // The library sums the gradient over rows: scale the step so learningRate means the same at any size.
  const model = new LogisticRegression({ numSteps: num(hp, 'steps'), learningRate: num(hp, 'learningRate') / X.length });
  model.train(new Matrix(withBias(X)), Matrix.columnVector(y));
  return logisticModel(model, k);
}

function logisticModel(model: LogRegModel, k: number): TrainedModel {
  const { Matrix } = mlMatrix();
  return {
    predictProba: (X) => {
      const m = new Matrix(withBias(X));
      // classifier i scores P(not class i) (the library's one-vs-all labels the class 0)
      const scores = model.classifiers.map((c) => c.testScores(m));
      return X.map((_, r) => {
        const p = Array.from({ length: k }, (_, c) => 1 - (scores[c]?.[r] ?? 1));
        const s = p.reduce((a, b) => a + b, 0);
        return s > 0 ? p.map((v) => v / s) : p.map(() => 1 / k);
      });
    },
    toJSON: () => ({ model: JSON.parse(JSON.stringify(model.toJSON())) }),
  };
}

/** Ridge regression in closed form: w = (XᵀX + λI)⁻¹ Xᵀy, the intercept not penalised. */
function fitLinear(X: number[][], y: number[], hp: Hyperparameters): TrainedModel {
  const { Matrix, solve } = mlMatrix();
  const A = new Matrix(withBias(X));
  const At = A.transpose();
  const AtA = At.mmul(A);
  const l2 = num(hp, 'l2') * X.length;
  for (let i = 0; i < AtA.rows - 1; i++) AtA.set(i, i, AtA.get(i, i) + l2);
  const w = solve(AtA, At.mmul(Matrix.columnVector(y)), true).to1DArray();
  return linearModel(w);
}

function linearModel(weights: number[]): TrainedModel {
  return {
    predict: (X) => X.map((r) => r.reduce((a, x, i) => a + x * weights[i]!, weights[weights.length - 1]!)),
    toJSON: () => ({ weights }),
  };
}

// ---- decision trees -------------------------------------------------------------------------------

function fitTree(kind: LearnerKind, X: number[][], y: number[], k: number, hp: Hyperparameters, fc: FitContext): TrainedModel {
  const cart = require('ml-cart') as CartModule;
  let rows = X.map((_, i) => i);
  if (rows.length > TREE_MAX_ROWS) {
    const r = seededRandom(fc.seed);
    for (let i = rows.length - 1; i > 0; i--) {
      const j = Math.floor(r() * (i + 1));
      [rows[i], rows[j]] = [rows[j]!, rows[i]!];
    }
    rows = rows.slice(0, TREE_MAX_ROWS);
    fc.log(`decision_tree: trained on a seeded sample of ${TREE_MAX_ROWS} of ${X.length} rows (ml-cart is quadratic in rows)`);
  }
  const opts = { maxDepth: num(hp, 'maxDepth'), minNumSamples: num(hp, 'minNumSamples') };
  const model = kind === 'classification' ? new cart.DecisionTreeClassifier(opts) : new cart.DecisionTreeRegression(opts);
  model.train(rows.map((i) => X[i]!), rows.map((i) => y[i]!));
  return treeModel(kind, k, model);
}

function treeModel(kind: LearnerKind, k: number, model: CartModel): TrainedModel {
  return {
    predictProba: kind === 'classification' ? (X) => X.map((r) => {
      const d = model.root.classify(r) as { to1DArray(): number[] };
      const p = d.to1DArray();
      return Array.from({ length: k }, (_, c) => p[c] ?? 0);
    }) : undefined,
    predict: kind === 'regression' ? (X) => model.predict(X) : undefined,
    toJSON: () => ({ model: JSON.parse(JSON.stringify(model.toJSON())) }),
  };
}
