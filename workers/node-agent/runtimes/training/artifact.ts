/**
 * The model artifact (one JSON document in the artifact store): the fitted transforms, the model,
 * the feature schema and what prediction needs. Loading one gives a predictor that applies exactly
 * the transforms fitted at training.
 */
import { coerce, valueIn, type RawValue } from '../../../../src/modules/training/dataset-parser';
import type { FeatureSchema, Hyperparameters, ModelPrediction, Task } from '../../../../src/modules/training/training.contract';
import { futureTimestamps } from '../forecast/index';
import { forecaster, type Fit } from './forecasting';
import { argmax } from './metrics';
import { loadModel, type TrainedModel } from './models';
import { applyPipeline, type Pipeline, type Table } from './transforms';

export const ARTIFACT_FORMAT = 'nimbus-model/1';

interface ArtifactBase {
  format: typeof ARTIFACT_FORMAT;
  task: Task;
  algorithm: string;
  hyperparameters: Hyperparameters;
  featureSchema: FeatureSchema;
}

export interface SupervisedArtifact extends ArtifactBase {
  pipeline: Pipeline;
  /** Classification: labels by class index. */
  classes?: string[];
  /** Regression: standard deviation of the validation residuals (for 95% intervals). */
  residualStd?: number;
  model: unknown;
}

export interface ForecastArtifact extends ArtifactBase {
  season: number | null;
  positive: boolean;
  /** The training series (its last 5,000 points at most): the model is refitted on it to forecast. */
  series: number[];
  /** Last timestamps of the series (ISO), to extend into forecast timestamps. */
  timestamps?: string[];
}

export type ModelArtifact = SupervisedArtifact | ForecastArtifact;

export interface LoadedModel {
  artifact: ModelArtifact;
  predict(input: { rows?: Array<Record<string, unknown>>; horizon?: number }): ModelPrediction[];
  dispose(): void;
}

const r6 = (x: number) => Math.round(x * 1e6) / 1e6;

export async function loadArtifact(a: ModelArtifact): Promise<LoadedModel> {
  if (a.format !== ARTIFACT_FORMAT) throw new Error(`unsupported model artifact format ${String(a.format)}`);
  if (a.task === 'FORECASTING') return loadForecast(a as ForecastArtifact);
  const s = a as SupervisedArtifact;
  const kind = a.task === 'TABULAR_REGRESSION' ? 'regression' : 'classification';
  const model = await loadModel(a.algorithm, kind, s.model, s.classes?.length ?? 1);
  return supervised(s, model);
}

/** A loaded predictor over a model just trained (the benchmark calls it directly). */
export function supervised(a: SupervisedArtifact, model: TrainedModel): LoadedModel {
  const features = a.featureSchema.features;
  return {
    artifact: a,
    predict: ({ rows = [] }) => {
      // own values only: a feature named "constructor" or "__proto__" a row lacks is missing, not an inherited member
      const table: Table = new Map(features.map((f) => [f.name, rows.map((r) => coerce(valueIn(r, f.name) as RawValue | undefined, f.type))]));
      const X = applyPipeline(a.pipeline, table);
      if (model.predictProba) {
        const classes = a.classes ?? [];
        return model.predictProba(X).map((p) => ({
          label: classes[argmax(p)]!,
          probabilities: Object.fromEntries(classes.map((c, i) => [c, r6(p[i] ?? 0)])),
        }));
      }
      const z = 1.96 * (a.residualStd ?? 0);
      return model.predict!(X).map((v) => ({ value: r6(v), lower95: r6(v - z), upper95: r6(v + z) }));
    },
    dispose: () => model.dispose?.(),
  };
}

function loadForecast(a: ForecastArtifact): LoadedModel {
  const fit: Fit = forecaster(a.algorithm, a.hyperparameters, a.season ?? undefined, a.positive);
  const cache = new Map<number, ModelPrediction[]>();
  return {
    artifact: a,
    predict: ({ horizon = a.featureSchema.horizon ?? 1 }) => {
      let out = cache.get(horizon);
      if (!out) {
        const p = fit(a.series, horizon);
        const stamps = futureTimestamps(a.timestamps, horizon);
        out = p.point.map((v, i) => ({
          step: i + 1, value: r6(v),
          lower95: r6(Math.min(p.lower95[i]!, v)), upper95: r6(Math.max(p.upper95[i]!, v)),
          ...(stamps ? { timestamp: stamps[i] } : {}),
        }));
        if (cache.size > 8) cache.clear();
        cache.set(horizon, out);
      }
      return out;
    },
    dispose: () => cache.clear(),
  };
}
