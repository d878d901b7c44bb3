/**
 * model.predict: runs a deployed model version on rows (or a horizon). Loaded models are kept per
 * worker thread in an LRU by artifact key, so a deployment's traffic pays the load once; each job
 * names its model version, so a deployment switched to another version never mixes the two.
 */
import type { ModelPredictInput, ModelPrediction } from '../../../../src/modules/training/training.contract';
import { canceled, RuntimeError, type JobContext } from '../types';
import { loadArtifact, type LoadedModel, type ModelArtifact } from './artifact';
import { artifactStore } from './store';

export const MODEL_CACHE_SIZE = 16;
const cache = new Map<string, Promise<LoadedModel>>();

function evict(): void {
  while (cache.size > MODEL_CACHE_SIZE) {
    const [key, oldest] = cache.entries().next().value!;
    cache.delete(key);
    void oldest.then((m) => m.dispose(), () => undefined);
  }
}

export async function loadedModel(artifactKey: string): Promise<{ model: LoadedModel; cached: boolean }> {
  const hit = cache.get(artifactKey);
  if (hit) {
    cache.delete(artifactKey);
    cache.set(artifactKey, hit); // most recently used last
    return { model: await hit, cached: true };
  }
  const p = (async () => loadArtifact(JSON.parse((await artifactStore().get(artifactKey)).toString()) as ModelArtifact))();
  p.catch(() => cache.delete(artifactKey));
  cache.set(artifactKey, p);
  evict();
  return { model: await p, cached: false };
}

export const modelCacheSize = () => cache.size;

export async function predictModel(input: ModelPredictInput, ctx: Pick<JobContext, 'signal'>): Promise<{ predictions: ModelPrediction[]; modelVersion: { id: string; version: number } }> {
  if (ctx.signal.aborted) throw canceled();
  let model: LoadedModel;
  try {
    ({ model } = await loadedModel(input.artifactKey));
  } catch (err) {
    throw new RuntimeError('MODEL_ERROR', `loading model version ${input.modelVersionId} failed: ${(err as Error).message}`);
  }
  const predictions = model.predict({ rows: input.rows, horizon: input.horizon });
  return { predictions, modelVersion: { id: input.modelVersionId, version: input.version } };
}
