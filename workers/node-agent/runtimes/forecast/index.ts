import { canceled, RuntimeError, type JobContext } from '../types';
import { loadForecastLibs } from './libs';
import { candidates, type Candidate, type Prediction } from './models';
import { detectSeasonality } from './seasonality';

export interface ForecastInput {
  series: number[];
  horizon: number;
  seasonality?: number;
  timestamps?: string[];
}

export interface ForecastPoint {
  step: number;
  value: number;
  lower80: number;
  upper80: number;
  lower95: number;
  upper95: number;
  timestamp?: string;
}

export interface ForecastOutput {
  model: string;
  seasonality: number | null;
  forecast: ForecastPoint[];
  /** Percent errors of the chosen model over the rolling-origin backtest (null: too short to test). */
  backtest: { mape: number | null; smape: number | null; origins: number; horizon: number };
  candidates: Array<{ model: string; mape: number | null; smape: number | null }>;
}

/** Older points add little to these models and cost quadratic time in AutoARIMA. */
export const MAX_TRAIN_POINTS = 5000;
const ORIGINS = 3;

interface Score {
  mape: number | null;
  smape: number | null;
}

function errors(actual: number[], predicted: number[]): { ape: number[]; sape: number[] } {
  const ape: number[] = [];
  const sape: number[] = [];
  actual.forEach((a, i) => {
    const p = predicted[i] as number;
    if (a !== 0) ape.push(Math.abs((p - a) / a));
    const denom = (Math.abs(a) + Math.abs(p)) / 2;
    sape.push(denom === 0 ? 0 : Math.abs(p - a) / denom);
  });
  return { ape, sape };
}

const pct = (xs: number[]) => (xs.length ? Math.round((xs.reduce((a, b) => a + b, 0) / xs.length) * 1e6) / 1e4 : null);
const yieldToEvents = () => new Promise<void>((r) => setImmediate(r));

/** Rolling-origin backtest of one candidate; null when it cannot fit at every origin. */
function backtest(c: Candidate, y: number[], origins: number[], hb: number): Score | null {
  const ape: number[] = [];
  const sape: number[] = [];
  for (const o of origins) {
    if (o < c.minLength) return null;
    try {
      const p = c.fit(y.slice(0, o), hb);
      const e = errors(y.slice(o, o + hb), p.point);
      ape.push(...e.ape);
      sape.push(...e.sape);
    } catch {
      return null;
    }
  }
  return { mape: pct(ape), smape: pct(sape) };
}

/**
 * forecast.auto: candidate models are compared by a rolling-origin backtest (up to 3 origins,
 * backtest horizon = min(horizon, season)); the lowest sMAPE wins and is refit on all data.
 */
export async function forecast(input: ForecastInput, ctx: Pick<JobContext, 'signal' | 'reportProgress'>): Promise<ForecastOutput> {
  const libs = loadForecastLibs();
  const y = input.series.slice(-MAX_TRAIN_POINTS);
  const n = y.length;
  const h = input.horizon;
  let season = input.seasonality ?? detectSeasonality(y);
  if (season !== undefined && n < 2 * season) season = undefined;
  const positive = y.every((v) => v > 0);
  const list = candidates(libs, season, positive);

  const hb = Math.min(h, season ?? h, Math.max(1, Math.floor(n / 4)));
  const minTrain = Math.max(4, season ? season + 1 : 4);
  const origins = Array.from({ length: ORIGINS }, (_, k) => n - hb * (k + 1)).filter((o) => o >= minTrain);

  const scored: Array<{ c: Candidate; score: Score }> = [];
  for (const [i, c] of list.entries()) {
    await yieldToEvents(); // lets a cancel message in between candidates
    if (ctx.signal.aborted) throw canceled();
    const score = origins.length ? backtest(c, y, origins, hb) : { mape: null, smape: null };
    if (score) scored.push({ c, score });
    ctx.reportProgress(((i + 1) / (list.length + 1)) * 0.95);
  }
  const ranked = scored.sort((a, b) => (a.score.smape ?? Infinity) - (b.score.smape ?? Infinity));

  let chosen: { c: Candidate; score: Score } | undefined;
  let prediction: Prediction | undefined;
  for (const s of ranked.length ? ranked : list.map((c) => ({ c, score: { mape: null, smape: null } }))) {
    if (n < s.c.minLength) continue;
    try {
      prediction = s.c.fit(y, h);
      chosen = s;
      break;
    } catch {
      // next best
    }
  }
  if (!chosen || !prediction) throw new RuntimeError('MODEL_ERROR', 'no forecasting model could be fit to this series');
  ctx.reportProgress(1);

  const stamps = futureTimestamps(input.timestamps, h);
  const p = prediction;
  const r = (v: number) => Math.round(v * 1e6) / 1e6;
  return {
    model: chosen.c.name,
    seasonality: season ?? null,
    forecast: p.point.map((value, i) => ({
      step: i + 1,
      value: r(value),
      lower80: r(Math.min(p.lower80[i] as number, value)),
      upper80: r(Math.max(p.upper80[i] as number, value)),
      lower95: r(Math.min(p.lower95[i] as number, p.lower80[i] as number, value)),
      upper95: r(Math.max(p.upper95[i] as number, p.upper80[i] as number, value)),
      ...(stamps ? { timestamp: stamps[i] } : {}),
    })),
    backtest: { ...chosen.score, origins: origins.length, horizon: hb },
    candidates: ranked.map((s) => ({ model: s.c.name, ...s.score })),
  };
}

/** Extends timestamps when they are ISO dates a constant number of days or months apart. */
export function futureTimestamps(ts: string[] | undefined, h: number): string[] | undefined {
  if (!ts || ts.length < 2) return undefined;
  const ms = ts.map((t) => Date.parse(t));
  if (ms.some((v) => Number.isNaN(v))) return undefined;
  const dateOnly = ts.every((t) => /^\d{4}-\d{2}-\d{2}$/.test(t));
  const fmt = (d: Date) => (dateOnly ? d.toISOString().slice(0, 10) : d.toISOString());
  const last = new Date(ms[ms.length - 1] as number);
  const step = (ms[1] as number) - (ms[0] as number);
  if (step > 0 && ms.every((v, i) => i === 0 || v - (ms[i - 1] as number) === step)) {
    return Array.from({ length: h }, (_, k) => fmt(new Date(last.getTime() + step * (k + 1))));
  }
  const months = (d: Date) => d.getUTCFullYear() * 12 + d.getUTCMonth();
  const dates = ms.map((v) => new Date(v));
  const mStep = months(dates[1] as Date) - months(dates[0] as Date);
  const sameDay = dates.every((d) => d.getUTCDate() === (dates[0] as Date).getUTCDate() && d.getUTCDate() <= 28);
  if (mStep > 0 && sameDay && dates.every((d, i) => i === 0 || months(d) - months(dates[i - 1] as Date) === mStep)) {
    return Array.from({ length: h }, (_, k) => {
      const d = new Date(last);
      d.setUTCMonth(d.getUTCMonth() + mStep * (k + 1));
      return fmt(d);
    });
  }
  return undefined;
}
