/** Validation metrics. Percent errors (MAPE, sMAPE) are in percent, like forecast.auto's backtest. */

const round = (x: number) => (Number.isFinite(x) ? Math.round(x * 1e6) / 1e6 : x);

export function classificationMetrics(yTrue: number[], proba: number[][], k: number): Record<string, number> {
  const pred = proba.map(argmax);
  const n = yTrue.length;
  let correct = 0;
  let logLoss = 0;
  const tp = new Array(k).fill(0);
  const fp = new Array(k).fill(0);
  const fn = new Array(k).fill(0);
  for (let i = 0; i < n; i++) {
    const t = yTrue[i]!;
    const p = pred[i]!;
    if (t === p) {
      correct++;
      tp[t]++;
    } else {
      fp[p]++;
      fn[t]++;
    }
    logLoss -= Math.log(Math.min(1 - 1e-15, Math.max(1e-15, proba[i]![t] ?? 0)));
  }
  // Macro F1 over the classes that occur in the truth or the predictions.
  let f1 = 0;
  let classes = 0;
  for (let c = 0; c < k; c++) {
    if (tp[c] + fp[c] + fn[c] === 0) continue;
    classes++;
    f1 += (2 * tp[c]) / (2 * tp[c] + fp[c] + fn[c]);
  }
  const out: Record<string, number> = { accuracy: round(correct / n), f1Macro: round(classes ? f1 / classes : 0), logLoss: round(logLoss / n) };
  if (k === 2) {
    const a = auc(yTrue, proba.map((p) => p[1] ?? 0));
    if (a !== null) out.auc = round(a);
  }
  return out;
}

export const argmax = (p: number[]) => p.reduce((best, v, i) => (v > (p[best] ?? -Infinity) ? i : best), 0);

/** ROC AUC by ranks (Mann-Whitney U), ties averaged; null when only one class is present. */
export function auc(yTrue: number[], score: number[]): number | null {
  const idx = score.map((s, i) => [s, i] as const).sort((a, b) => a[0] - b[0]);
  const ranks = new Array<number>(score.length);
  for (let i = 0; i < idx.length; ) {
    let j = i;
    while (j + 1 < idx.length && idx[j + 1]![0] === idx[i]![0]) j++;
    for (let t = i; t <= j; t++) ranks[idx[t]![1]] = (i + j) / 2 + 1;
    i = j + 1;
  }
  let pos = 0;
  let rankSum = 0;
  yTrue.forEach((y, i) => {
    if (y === 1) {
      pos++;
      rankSum += ranks[i]!;
    }
  });
  const neg = yTrue.length - pos;
  if (pos === 0 || neg === 0) return null;
  return (rankSum - (pos * (pos + 1)) / 2) / (pos * neg);
}

export function regressionMetrics(yTrue: number[], yPred: number[]): Record<string, number> {
  const n = yTrue.length;
  const mean = yTrue.reduce((a, b) => a + b, 0) / n;
  let se = 0;
  let ae = 0;
  let tot = 0;
  for (let i = 0; i < n; i++) {
    const e = yPred[i]! - yTrue[i]!;
    se += e * e;
    ae += Math.abs(e);
    tot += (yTrue[i]! - mean) ** 2;
  }
  return { rmse: round(Math.sqrt(se / n)), mae: round(ae / n), r2: round(tot > 0 ? 1 - se / tot : 0) };
}

export function forecastMetrics(actual: number[], predicted: number[]): Record<string, number> {
  let ape = 0;
  let apeN = 0;
  let sape = 0;
  actual.forEach((a, i) => {
    const p = predicted[i]!;
    if (a !== 0) {
      ape += Math.abs((p - a) / a);
      apeN++;
    }
    const d = (Math.abs(a) + Math.abs(p)) / 2;
    sape += d === 0 ? 0 : Math.abs(p - a) / d;
  });
  const r = regressionMetrics(actual, predicted);
  return { smape: round((sape / actual.length) * 100), ...(apeN ? { mape: round((ape / apeN) * 100) } : {}), rmse: r.rmse!, mae: r.mae! };
}

/** `baselineX` keys for the baseline's metrics, kept beside the model's for comparison. */
export const asBaseline = (m: Record<string, number>) =>
  Object.fromEntries(Object.entries(m).map(([k, v]) => [`baseline${k[0]!.toUpperCase()}${k.slice(1)}`, v]));
