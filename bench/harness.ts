import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

/** What every benchmark returns: rows for the printed table and a summary (ratios, targets). */
export interface BenchResult {
  name: string;
  rows: Array<Record<string, string | number>>;
  summary: Record<string, unknown>;
}
export type Bench = (args: string[]) => Promise<BenchResult>;

export function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[i];
}

export function latencyStats(samplesMs: number[]): { p50: number; p99: number; mean: number; n: number } {
  const s = [...samplesMs].sort((a, b) => a - b);
  const mean = s.reduce((a, b) => a + b, 0) / (s.length || 1);
  return { p50: round(percentile(s, 50)), p99: round(percentile(s, 99)), mean: round(mean), n: s.length };
}

export const round = (x: number, digits = 3) => Math.round(x * 10 ** digits) / 10 ** digits;

export function printTable(rows: Array<Record<string, string | number>>): void {
  if (rows.length === 0) return;
  const cols = [...new Set(rows.flatMap((r) => Object.keys(r)))];
  const cell = (v: unknown) => (v === undefined ? '' : String(v));
  const widths = cols.map((c) => Math.max(c.length, ...rows.map((r) => cell(r[c]).length)));
  const line = (vals: string[]) => vals.map((v, i) => v.padEnd(widths[i])).join('  ');
  console.log(line(cols));
  console.log(widths.map((w) => '-'.repeat(w)).join('  '));
  for (const r of rows) console.log(line(cols.map((c) => cell(r[c]))));
}

export function writeResult(result: BenchResult, dir = join(process.cwd(), 'bench', 'results')): string {
  mkdirSync(dir, { recursive: true });
  const file = join(dir, `${result.name}.json`);
  writeFileSync(file, JSON.stringify({ ...result, at: new Date().toISOString() }, null, 2));
  return file;
}

/** `--name value` or `--name=value`. */
export function flag(args: string[], name: string): string | undefined {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? args[i + 1] : args.find((a) => a.startsWith(`--${name}=`))?.slice(name.length + 3);
}

/** A positive number flag; anything else is a usage error naming the flag. */
export function numFlag(args: string[], name: string, fallback: number): number {
  const raw = flag(args, name);
  if (raw === undefined) return fallback;
  const n = Number(raw);
  if (!Number.isFinite(n) || n <= 0) throw new Error(`--${name} must be a positive number, got "${raw}"`);
  return n;
}

/** A positive whole-number flag (counts, sizes). */
export function intFlag(args: string[], name: string, fallback: number): number {
  const n = numFlag(args, name, fallback);
  if (!Number.isInteger(n)) throw new Error(`--${name} must be a positive integer, got "${flag(args, name)}"`);
  return n;
}
