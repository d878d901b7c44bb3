/** Candidate periods: quarterly-in-year, business week, week, year of months, day of hours, year of weeks. */
export const CANDIDATE_PERIODS = [4, 5, 7, 12, 24, 52];

export function acf(x: readonly number[], lag: number): number {
  const n = x.length;
  const mean = x.reduce((a, b) => a + b, 0) / n;
  let num = 0;
  let den = 0;
  for (let i = 0; i < n; i++) {
    const d = (x[i] as number) - mean;
    den += d * d;
    if (i + lag < n) num += d * ((x[i + lag] as number) - mean);
  }
  return den > 0 ? num / den : 0;
}

export const diff = (x: readonly number[], lag = 1): number[] => x.slice(lag).map((v, i) => v - (x[i] as number));

/**
 * Detects a seasonal period from the autocorrelation of the first differences (differencing
 * removes trend, which otherwise makes every lag look correlated). Returns undefined when no
 * candidate clears max(0.3, 2.5/sqrt(n)). A divisor of the winner is preferred when nearly as
 * strong (period 12 over 24).
 */
export function detectSeasonality(series: readonly number[]): number | undefined {
  const n = series.length;
  const positive = series.every((v) => v > 0);
  const d = diff(positive ? series.map(Math.log) : series);
  const threshold = Math.max(0.3, 2.5 / Math.sqrt(d.length));
  const scored = CANDIDATE_PERIODS.filter((p) => n >= 2 * p + 2).map((p) => ({ p, r: acf(d, p) }));
  const best = scored.reduce<{ p: number; r: number } | undefined>((b, c) => (c.r > (b?.r ?? -Infinity) ? c : b), undefined);
  if (!best || best.r < threshold) return undefined;
  const divisor = scored.find((c) => c.p < best.p && best.p % c.p === 0 && c.r >= 0.8 * best.r);
  return (divisor ?? best).p;
}
