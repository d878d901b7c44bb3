/* eslint-disable @typescript-eslint/no-require-imports */
/**
 * Multi-layer perceptron on @tensorflow/tfjs-layers over the wasm backend (inside a worker thread).
 * Deterministic from the seed: seeded initialisers and dropout, and a seeded shuffle per epoch.
 * Every `checkpointEvery` epochs the weights and the Adam state go to the artifact store, so a
 * preempted or node-lost attempt resumes at that epoch with the same result as an uninterrupted run.
 */
import type * as TfLayers from '@tensorflow/tfjs-layers';
import { seededRandom } from '../../../../src/platform/random';
import { mixSeed, type Hyperparameters } from '../../../../src/modules/training/training.contract';
import { canceled } from '../types';
import { initTf, tf } from '../vision/tf';
import type { FitContext, LearnerKind, TrainedModel } from './models';

const layersLib = () => require('@tensorflow/tfjs-layers') as typeof TfLayers;

interface MlpConfig {
  inputDim: number;
  outputDim: number;
  hiddenUnits: number;
  layers: number;
  dropout: number;
  seed: number;
}

interface SavedTensor {
  name?: string;
  shape: number[];
  data: string;
}

const f32 = (t: tf.Tensor) => Buffer.from((t.dataSync() as Float32Array).buffer.slice(0)).toString('base64');
const unf32 = (s: string) => {
  const b = Buffer.from(s, 'base64');
  return new Float32Array(b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength));
};

function build(c: MlpConfig, kind: LearnerKind): TfLayers.Sequential {
  const tfl = layersLib();
  const model = tfl.sequential();
  for (let l = 0; l < c.layers; l++) {
    model.add(tfl.layers.dense({
      units: c.hiddenUnits, activation: 'relu', ...(l === 0 ? { inputShape: [c.inputDim] } : {}),
      kernelInitializer: tfl.initializers.glorotUniform({ seed: c.seed + l }), biasInitializer: 'zeros',
    }));
    if (c.dropout > 0) model.add(tfl.layers.dropout({ rate: c.dropout, seed: c.seed + 100 + l }));
  }
  model.add(tfl.layers.dense({
    units: c.outputDim, activation: kind === 'classification' ? 'softmax' : 'linear',
    kernelInitializer: tfl.initializers.glorotUniform({ seed: c.seed + 99 }),
  }));
  return model;
}

function saveWeights(model: TfLayers.Sequential): SavedTensor[] {
  return model.getWeights().map((w) => ({ shape: w.shape, data: f32(w) }));
}

function setWeights(model: TfLayers.Sequential, saved: SavedTensor[]): void {
  const ts = saved.map((w) => tf.tensor(unf32(w.data), w.shape));
  model.setWeights(ts);
  ts.forEach((t) => t.dispose());
}

export async function fitMlp(kind: LearnerKind, X: number[][], y: number[], k: number, hp: Hyperparameters, fc: FitContext): Promise<TrainedModel> {
  await initTf();
  const n = X.length;
  const epochs = Number(hp.epochs);
  const batchSize = Number(hp.batchSize);
  const every = Math.max(1, Number(hp.checkpointEvery ?? 5));
  const cfg: MlpConfig = {
    inputDim: X[0]?.length ?? 0, outputDim: kind === 'classification' ? k : 1, hiddenUnits: Number(hp.hiddenUnits),
    layers: Number(hp.layers), dropout: Number(hp.dropout ?? 0), seed: fc.seed,
  };
  // Regression targets are standardised for training and mapped back at prediction.
  const yMean = kind === 'regression' ? y.reduce((a, b) => a + b, 0) / n : 0;
  const yStd = kind === 'regression' ? Math.sqrt(y.reduce((a, b) => a + (b - yMean) ** 2, 0) / n) || 1 : 1;
  const model = build(cfg, kind);
  const optimizer = tf.train.adam(Number(hp.learningRate));
  model.compile({ optimizer, loss: kind === 'classification' ? 'categoricalCrossentropy' : 'meanSquaredError' });

  let start = 0;
  const saved = await fc.checkpoint.load();
  if (saved && saved.step < epochs) {
    setWeights(model, saved.state.weights as SavedTensor[]);
    const opt = (saved.state.optimizer as SavedTensor[]).map((w) => ({ name: w.name!, tensor: tf.tensor(unf32(w.data), w.shape) }));
    await optimizer.setWeights(opt);
    // setWeights recomputes Adam's bias-correction powers as beta^(t+1); the running products
    // differ in the last float bits, so the saved ones are restored for a bit-identical resume.
    const acc = optimizer as unknown as { accBeta1: tf.Variable; accBeta2: tf.Variable };
    if (saved.state.accBeta) {
      acc.accBeta1.assign(tf.scalar(saved.state.accBeta[0]));
      acc.accBeta2.assign(tf.scalar(saved.state.accBeta[1]));
    }
    start = saved.step;
    fc.log(`resumed from checkpoint at step ${start} (epoch ${start} of ${epochs})`);
  }

  const xs = tf.tensor2d(X, [n, cfg.inputDim]);
  const ys = kind === 'classification'
    ? tf.tidy(() => tf.cast(tf.oneHot(tf.tensor1d(y, 'int32'), k), 'float32'))
    : tf.tensor2d(y.map((v) => (v - yMean) / yStd), [n, 1]);
  try {
    for (let epoch = start; epoch < epochs; epoch++) {
      const order = Int32Array.from({ length: n }, (_, i) => i);
      const r = seededRandom(mixSeed(fc.seed, epoch));
      for (let i = n - 1; i > 0; i--) {
        const j = Math.floor(r() * (i + 1));
        const t = order[i]!;
        order[i] = order[j]!;
        order[j] = t;
      }
      let loss = 0;
      let batches = 0;
      for (let b = 0; b < n; b += batchSize) {
        if (fc.signal.aborted) throw canceled();
        const idx = tf.tensor1d(order.subarray(b, Math.min(n, b + batchSize)), 'int32');
        const bx = tf.gather(xs, idx);
        const by = tf.gather(ys, idx);
        const l = await model.trainOnBatch(bx, by);
        loss += Array.isArray(l) ? (l[0] as number) : (l as number);
        batches++;
        tf.dispose([idx, bx, by]);
      }
      fc.progress((epoch + 1) / epochs);
      if ((epoch + 1) % Math.max(1, Math.round(epochs / 6)) === 0 || epoch + 1 === epochs) {
        fc.log(`epoch ${epoch + 1}/${epochs} loss ${(loss / Math.max(1, batches)).toFixed(5)}`);
      }
      if ((epoch + 1) % every === 0 && epoch + 1 < epochs) {
        const opt = await optimizer.getWeights();
        const acc = optimizer as unknown as { accBeta1: tf.Variable; accBeta2: tf.Variable };
        await fc.checkpoint.save(epoch + 1, {
          accBeta: [acc.accBeta1.dataSync()[0], acc.accBeta2.dataSync()[0]],
          weights: saveWeights(model),
          optimizer: opt.map((w) => ({ name: w.name, shape: w.tensor.shape, data: f32(w.tensor) })),
        });
        fc.log(`checkpoint saved at step ${epoch + 1}`);
      }
    }
  } catch (err) {
    model.dispose(); // cancelled or failed: free the thread's memory now
    optimizer.dispose();
    throw err;
  } finally {
    tf.dispose([xs, ys]);
  }
  const json = { config: cfg, weights: saveWeights(model), yMean, yStd };
  return { ...mlpModel(kind, model, json), resumedFrom: start };
}

export async function loadMlp(kind: LearnerKind, json: { config: MlpConfig; weights: SavedTensor[]; yMean: number; yStd: number }): Promise<TrainedModel> {
  await initTf();
  const model = build(json.config, kind);
  setWeights(model, json.weights);
  return mlpModel(kind, model, json);
}

function mlpModel(kind: LearnerKind, model: TfLayers.Sequential, json: { config: MlpConfig; yMean: number; yStd: number }): TrainedModel {
  const run = (X: number[][]) => tf.tidy(() => (model.predict(tf.tensor2d(X, [X.length, json.config.inputDim])) as tf.Tensor).arraySync() as number[][]);
  return {
    predictProba: kind === 'classification' ? run : undefined,
    predict: kind === 'regression' ? (X) => run(X).map((r) => r[0]! * json.yStd + json.yMean) : undefined,
    toJSON: () => json,
    dispose: () => model.dispose(),
  };
}
