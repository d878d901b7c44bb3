import type { LayersModel } from '@tensorflow/tfjs-layers';
import { modulePath } from '../paths';
import { decodeRgb, type ImagePayload } from './decode';
import { initTf, tf } from './tf';

/**
 * nsfwjs's bundled MobileNetV2 (a 224x224 Keras layers model shipped as base64 in JS files).
 * Loaded with tfjs-layers directly: nsfwjs's own load() also requires its InceptionV3 bundle,
 * ~90 MB of base64, which costs seconds. Preprocessing matches nsfwjs: RGB / 255 at 224x224.
 */
const SIZE = 224;
const CLASSES = ['drawing', 'hentai', 'neutral', 'porn', 'sexy'] as const;
export type ModerationLabel = (typeof CLASSES)[number];

/** flagged when porn + hentai + sexy >= this; ordinary clothed photos scored below ~0.65 in checks. */
export const FLAG_THRESHOLD = 0.7;

let model: LayersModel | null = null;
export const moderationLoaded = () => model !== null;

export async function loadModeration(): Promise<void> {
  if (model) return;
  await initTf();
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const tfl = require('@tensorflow/tfjs-layers') as typeof import('@tensorflow/tfjs-layers');
  const dir = modulePath('nsfwjs', 'dist', 'models', 'mobilenet_v2');
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const json = require(`${dir}/model.min.js`) as { modelTopology: object; weightsManifest: Array<{ weights: tf.io.WeightsManifestEntry[] }> };
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const weights = Buffer.from(require(`${dir}/group1-shard1of1.min.js`) as string, 'base64');
  const m = await tfl.loadLayersModel({
    load: async () => ({
      modelTopology: json.modelTopology,
      weightSpecs: json.weightsManifest.flatMap((g) => g.weights),
      weightData: weights.buffer.slice(weights.byteOffset, weights.byteOffset + weights.byteLength),
    }),
  });
  // First predict compiles the wasm kernels; pay it at load time, not on the first job.
  const warm = m.predict(tf.zeros([1, SIZE, SIZE, 3])) as tf.Tensor;
  await warm.data();
  warm.dispose();
  model = m;
}

export async function moderate(input: { image: ImagePayload }) {
  await loadModeration();
  const rgb = await decodeRgb(input.image, { width: SIZE, height: SIZE });
  const probs = tf.tidy(() => {
    const x = tf.div(tf.tensor4d(Float32Array.from(rgb.data), [1, SIZE, SIZE, 3], 'float32'), 255);
    return (model as LayersModel).predict(x) as tf.Tensor;
  });
  const values = Array.from(await probs.data());
  probs.dispose();
  const labels = CLASSES.map((label, i) => ({ label, score: Math.round((values[i] ?? 0) * 1e4) / 1e4 })).sort((a, b) => b.score - a.score);
  const explicit = (values[1] ?? 0) + (values[3] ?? 0) + (values[4] ?? 0);
  return { flagged: explicit >= FLAG_THRESHOLD, labels };
}
