import { readFileSync } from 'node:fs';
import { modulePath } from '../paths';

/** Typed handles on the two wasm forecasting libraries, loaded once per thread. */
export interface ArimaModel {
  train(ts: number[]): ArimaModel;
  predict(h: number): [number[], number[]];
  destroy?(): void;
}
export type ArimaCtor = new (opts: Record<string, number | boolean>) => ArimaModel;

export interface AugursForecast {
  point: number[];
  intervals?: { level: number; lower: number[]; upper: number[] };
}
export interface AugursModel {
  fit(y: number[] | Float64Array): void;
  predict(horizon: number, level?: number | null): AugursForecast;
  free(): void;
}
interface MstlModule {
  initSync(m: { module: Buffer }): unknown;
  MSTL: { ets(periods: number[]): AugursModel };
}
interface EtsModule {
  initSync(m: { module: Buffer }): unknown;
  AutoETS: new (seasonLength: number, spec: string) => AugursModel;
}

export interface ForecastLibs {
  ARIMA: ArimaCtor;
  mstl(periods: number[]): AugursModel;
  autoEts(season: number, spec: string): AugursModel;
}

let libs: ForecastLibs | null = null;
export const forecastLoaded = () => libs !== null;

export function loadForecastLibs(): ForecastLibs {
  if (libs) return libs;
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const ARIMA = require('arima') as ArimaCtor; // compiles its wasm synchronously on require
  // augurs is ESM-only; Node >= 20.19 can require() it. initSync avoids its fetch()-based loader.
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const mstl = require('@bsull/augurs/mstl') as MstlModule;
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const ets = require('@bsull/augurs/ets') as EtsModule;
  mstl.initSync({ module: readFileSync(modulePath('@bsull/augurs', 'mstl_bg.wasm')) });
  ets.initSync({ module: readFileSync(modulePath('@bsull/augurs', 'ets_bg.wasm')) });
  libs = {
    ARIMA,
    mstl: (periods) => mstl.MSTL.ets(periods),
    autoEts: (season, spec) => new ets.AutoETS(season, spec),
  };
  return libs;
}
