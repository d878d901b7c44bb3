import type { AugursModel, ForecastLibs } from './libs';
import { diff } from './seasonality';

/** A point forecast with 80% and 95% prediction intervals, all of length h. */
export interface Prediction {
  point: number[];
  lower80: number[];
  upper80: number[];
  lower95: number[];
  upper95: number[];
}

export interface Candidate {
  name: string;
  /** Shortest training series this model can fit. */
  minLength: number;
  fit(train: number[], h: number): Prediction;
}

const Z80 = 1.2816;
const Z95 = 1.96;

const finite = (p: Prediction) =>
  [p.point, p.lower80, p.upper80, p.lower95, p.upper95].every((a) => a.every((v) => Number.isFinite(v)));

/** Fits on log values and maps everything back (the point becomes the median). */
export function onLogs(fit: (train: number[], h: number) => Prediction): (train: number[], h: number) => Prediction {
  return (train, h) => {
    const p = fit(train.map(Math.log), h);
    return {
      point: p.point.map(Math.exp),
      lower80: p.lower80.map(Math.exp),
      upper80: p.upper80.map(Math.exp),
      lower95: p.lower95.map(Math.exp),
      upper95: p.upper95.map(Math.exp),
    };
  };
}

/** Normal intervals from per-step variances (arima's predict() returns variances). */
function fromVariance(point: number[], variance: number[]): Prediction {
  const sd = variance.map((v) => Math.sqrt(Math.max(0, v)));
  return {
    point,
    lower80: point.map((m, i) => m - Z80 * (sd[i] ?? 0)),
    upper80: point.map((m, i) => m + Z80 * (sd[i] ?? 0)),
    lower95: point.map((m, i) => m - Z95 * (sd[i] ?? 0)),
    upper95: point.map((m, i) => m + Z95 * (sd[i] ?? 0)),
  };
}

export function arimaFit(libs: ForecastLibs, opts: Record<string, number | boolean>) {
  return (train: number[], h: number): Prediction => {
    const model = new libs.ARIMA({ ...opts, verbose: false }).train(train);
    try {
      const [point, variance] = model.predict(h);
      return fromVariance(Array.from(point), Array.from(variance));
    } finally {
      model.destroy?.();
    }
  };
}

export function augursFit(make: () => AugursModel) {
  return (train: number[], h: number): Prediction => {
    const model = make();
    try {
      model.fit(Float64Array.from(train));
      const p80 = model.predict(h, 0.8);
      const p95 = model.predict(h, 0.95);
      const point = Array.from(p95.point);
      if (!p80.intervals || !p95.intervals) throw new Error('model returned no intervals');
      return {
        point,
        lower80: Array.from(p80.intervals.lower),
        upper80: Array.from(p80.intervals.upper),
        lower95: Array.from(p95.intervals.lower),
        upper95: Array.from(p95.intervals.upper),
      };
    } finally {
      model.free();
    }
  };
}

/** (Seasonal) naive: always fits; intervals from the spread of past (seasonal) changes. */
function naiveFit(season: number) {
  return (train: number[], h: number): Prediction => {
    const n = train.length;
    const changes = diff(train, season);
    const sd = changes.length > 1 ? Math.sqrt(changes.reduce((a, c) => a + c * c, 0) / changes.length) : 0;
    const point: number[] = [];
    const variance: number[] = [];
    for (let k = 1; k <= h; k++) {
      point.push(train[n - season + ((k - 1) % season)] as number);
      variance.push(sd * sd * (Math.floor((k - 1) / season) + 1));
    }
    return fromVariance(point, variance);
  };
}

/** Random walk with drift: the naive forecast plus the average step; keeps straight trends. */
function driftFit(train: number[], h: number): Prediction {
  const n = train.length;
  const steps = diff(train);
  const drift = steps.reduce((a, b) => a + b, 0) / steps.length;
  const resid = steps.map((d) => d - drift);
  const sigma2 = resid.length > 1 ? resid.reduce((a, r) => a + r * r, 0) / (resid.length - 1) : 0;
  const last = train[n - 1] as number;
  const point = Array.from({ length: h }, (_, k) => last + drift * (k + 1));
  // Forecast variance of the drift model: h * sigma^2 * (1 + h / (n - 1)).
  const variance = point.map((_, k) => sigma2 * (k + 1) * (1 + (k + 1) / (n - 1)));
  return fromVariance(point, variance);
}

/** Candidate models for a series; which ones apply depends on length, season and sign. */
/** The longest season SARIMA and seasonal ETS are fitted for (as R's ets(): a day of hourly data, two years of monthly). */
export const MAX_STATE_SPACE_SEASON = 24;

export function candidates(libs: ForecastLibs, season: number | undefined, positive: boolean): Candidate[] {
  const list: Candidate[] = [];
  const guard = (name: string, minLength: number, fit: (t: number[], h: number) => Prediction, maxTrain = Infinity): Candidate => ({
    name,
    minLength,
    fit: (t, h) => {
      const p = fit(t.length > maxTrain ? t.slice(-maxTrain) : t, h);
      if (p.point.length !== h || !finite(p)) throw new Error(`${name} produced non-finite values`);
      return p;
    },
  });
  if (season) {
    // Seasonal state-space models carry a state per season step: their fit grows with the cube of
    // the period (ETS[300] on 1,000 points: 21 s; [500]: minutes). Like R's ets(), which ignores
    // seasonality above 24, long periods are left to MSTL (STL decomposition, then ETS on the
    // seasonally adjusted series) and the seasonal naive model.
    if (season <= MAX_STATE_SPACE_SEASON) {
      const airline = { p: 0, d: 1, q: 1, P: 0, D: 1, Q: 1, s: season };
      const name = `SARIMA(0,1,1)(0,1,1)[${season}]`;
      if (positive) list.push(guard(`${name} on logs`, 2 * season + 4, onLogs(arimaFit(libs, airline))));
      else list.push(guard(name, 2 * season + 4, arimaFit(libs, airline)));
    }
    const mstl = augursFit(() => libs.mstl([season]));
    list.push(guard(positive ? `MSTL+ETS[${season}] on logs` : `MSTL+ETS[${season}]`, 2 * season + 2, positive ? onLogs(mstl) : mstl));
    if (season <= MAX_STATE_SPACE_SEASON) list.push(guard(`ETS[${season}]`, 2 * season + 2, augursFit(() => libs.autoEts(season, 'ZZZ'))));
    list.push(guard(`Seasonal naive[${season}]`, season + 1, naiveFit(season)));
  }
  // AutoARIMA's order search grows fast with length (1.5 s at 5,000 points): it sees the last 1,000.
  list.push(guard('AutoARIMA', 8, arimaFit(libs, { auto: true }), 1000));
  list.push(guard('ETS', 4, augursFit(() => libs.autoEts(1, 'ZZN'))));
  list.push(guard('Drift', 3, driftFit));
  list.push(guard('Naive', 2, naiveFit(1)));
  return list;
}
