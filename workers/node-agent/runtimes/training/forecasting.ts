/**
 * Forecasting models for training: the same arima and @bsull/augurs models as forecast.auto, with
 * the algorithm and its orders chosen by the trial, validated by a time-ordered rolling-origin
 * backtest, and refitted on the whole series at prediction (fits take milliseconds).
 */
import type { Hyperparameters } from '../../../../src/modules/training/training.contract';
import { loadForecastLibs } from '../forecast/libs';
import { arimaFit, augursFit, onLogs, type Prediction } from '../forecast/models';
import { detectSeasonality } from '../forecast/seasonality';
import { forecastMetrics, asBaseline } from './metrics';

export type Fit = (train: number[], h: number) => Prediction;

const finite = (p: Prediction) => p.point.every((v) => Number.isFinite(v));

/** The fit function of one algorithm with its hyper-parameters for a series with this season. */
export function forecaster(algorithm: string, hp: Hyperparameters, season: number | undefined, positive: boolean): Fit {
  const libs = loadForecastLibs();
  const logs = hp.log === true && positive;
  let fit: Fit;
  switch (algorithm) {
    case 'sarima': {
      const order = { p: Number(hp.p), d: Number(hp.d), q: Number(hp.q) };
      fit = arimaFit(libs, season ? { ...order, P: Number(hp.P), D: Number(hp.D), Q: Number(hp.Q), s: season } : order);
      break;
    }
    case 'auto_arima':
      fit = arimaFit(libs, { auto: true });
      break;
    case 'ets': {
      const spec = String(hp.spec);
      fit = augursFit(() => (season ? libs.autoEts(season, spec) : libs.autoEts(1, `${spec.slice(0, 2)}N`)));
      break;
    }
    case 'mstl':
      if (!season) throw new Error('mstl needs a seasonal series (no season was detected; set the seasonality hyper-parameter)');
      fit = augursFit(() => libs.mstl([season]));
      break;
    default:
      throw new Error(`unknown forecasting algorithm ${algorithm}`);
  }
  const base = logs ? onLogs(fit) : fit;
  return (train, h) => {
    const p = base(train, h);
    if (p.point.length !== h || !finite(p)) throw new Error(`${algorithm} produced non-finite values`);
    return p;
  };
}

export function seasonOf(y: number[], hp: Hyperparameters): number | undefined {
  const given = Number(hp.seasonality ?? 0);
  let s = given > 1 ? given : detectSeasonality(y);
  if (s !== undefined && y.length < 2 * s + 2) s = undefined;
  return s;
}

/** Up to three origins, the last h points after each: model and naive last value, same points. */
export function backtest(fit: Fit, y: number[], h: number, minTrain: number): { metrics: Record<string, number>; origins: number } {
  const origins = [1, 2, 3].map((k) => y.length - h * k).filter((o) => o >= minTrain);
  if (!origins.length) throw new Error(`the series is too short for a backtest: ${y.length} points, horizon ${h}`);
  const actual: number[] = [];
  const predicted: number[] = [];
  const naive: number[] = [];
  for (const o of origins) {
    const p = fit(y.slice(0, o), h);
    actual.push(...y.slice(o, o + h));
    predicted.push(...p.point);
    naive.push(...Array.from({ length: h }, () => y[o - 1]!));
  }
  return { metrics: { ...forecastMetrics(actual, predicted), ...asBaseline(forecastMetrics(actual, naive)) }, origins: origins.length };
}
