/**
 * Declared feature engineering, fitted on the training split only and saved inside the model
 * artifact, so that prediction applies exactly the same transforms: select/drop, imputation
 * (mean, median, mode, constant), one-hot, standardisation, date parts and text TF-IDF.
 */
import type { ColumnType, FeatureSpec, TransformSpec } from '../../../../src/modules/training/training.contract';
import { imputeConstant } from '../../../../src/modules/training/dataset-parser';

export type Value = number | string | boolean | null;
/** Column name → values (already coerced to the column's type; datetimes as epoch ms). */
export type Table = Map<string, Value[]>;
type DatePart = 'year' | 'month' | 'day' | 'dayOfWeek' | 'hour' | 'dayOfYear';

export type Encoder =
  | { kind: 'numeric'; column: string; fill: number; center: number; scale: number }
  | { kind: 'onehot'; column: string; fill: string; categories: string[]; other: boolean }
  | { kind: 'dateparts'; column: string; fill: number; parts: DatePart[]; center: number[]; scale: number[] }
  | { kind: 'tfidf'; column: string; vocab: string[]; idf: number[]; ngram: number };

export interface Pipeline {
  encoders: Encoder[];
  featureNames: string[];
  columns: FeatureSpec[];
}

export interface PipelineOptions {
  /** Standardise numeric features by default (linear models, neural nets); trees do not need it. */
  standardize: boolean;
  textMaxFeatures: number;
  textNgram: number;
  maxCategories: number;
}

const DEFAULT_DATE_PARTS: DatePart[] = ['year', 'month', 'day', 'dayOfWeek', 'hour'];

/** The feature columns: given ones (or all but the excluded), then SELECT narrows and DROP removes. */
export function selectFeatures(all: Array<{ name: string; type: ColumnType }>, exclude: string[], featureColumns: string[] | undefined, transforms: TransformSpec[]) {
  let names = featureColumns ?? all.map((c) => c.name).filter((n) => !exclude.includes(n));
  const selects = transforms.filter((t) => t.type === 'SELECT');
  if (selects.length) {
    const keep = new Set(selects.flatMap((t) => t.columns));
    names = names.filter((n) => keep.has(n));
  }
  const drop = new Set(transforms.filter((t) => t.type === 'DROP').flatMap((t) => t.columns));
  names = names.filter((n) => !drop.has(n) && !exclude.includes(n));
  const types = new Map(all.map((c) => [c.name, c.type]));
  return names.map((name) => ({ name, type: types.get(name)! }));
}

const declared = (transforms: TransformSpec[], type: TransformSpec['type'], column: string) =>
  transforms.filter((t) => t.type === type && t.columns.includes(column)).at(-1);

function meanOf(xs: number[]): number {
  return xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : 0;
}
function stdOf(xs: number[], mean: number): number {
  const v = xs.length ? xs.reduce((a, b) => a + (b - mean) ** 2, 0) / xs.length : 0;
  return v > 1e-12 ? Math.sqrt(v) : 1;
}
function medianOf(xs: number[]): number {
  if (!xs.length) return 0;
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}
function modeOf<T extends string | number>(xs: T[]): T | undefined {
  const counts = new Map<T, number>();
  for (const x of xs) counts.set(x, (counts.get(x) ?? 0) + 1);
  let best: T | undefined;
  let n = -1;
  for (const [k, c] of counts) if (c > n || (c === n && String(k) < String(best))) [best, n] = [k, c];
  return best;
}

const toNumber = (v: Value): number | null => (v === null ? null : typeof v === 'boolean' ? (v ? 1 : 0) : typeof v === 'number' ? v : Number.isFinite(Number(v)) ? Number(v) : null);
const toCategory = (v: Value): string | null => (v === null ? null : String(v));

function datePart(ms: number, part: DatePart): number {
  const d = new Date(ms);
  switch (part) {
    case 'year': return d.getUTCFullYear();
    case 'month': return d.getUTCMonth() + 1;
    case 'day': return d.getUTCDate();
    case 'dayOfWeek': return d.getUTCDay();
    case 'hour': return d.getUTCHours();
    case 'dayOfYear': return Math.floor((ms - Date.UTC(d.getUTCFullYear(), 0, 1)) / 86_400_000) + 1;
  }
}

export function tokenize(text: string, ngram: number): string[] {
  const words = (text.toLowerCase().match(/[\p{L}\p{N}]+/gu) ?? []).filter((w) => w.length >= 2);
  if (ngram < 2) return words;
  const out = [...words];
  for (let i = 0; i + 1 < words.length; i++) out.push(`${words[i]} ${words[i + 1]}`);
  return out;
}

function numericFill(values: number[], spec: TransformSpec | undefined, type: ColumnType, fallback: 'MEAN' | 'MODE'): number {
  let strategy = spec?.strategy ?? fallback;
  if (strategy === 'CONSTANT') {
    const c = toNumber(imputeConstant(spec!.value, type));
    if (c !== null && Number.isFinite(c)) return c;
    strategy = fallback;
  }
  if (strategy === 'MEDIAN') return medianOf(values);
  if (strategy === 'MODE') return modeOf(values) ?? 0;
  return meanOf(values);
}

/** Fits every column's encoder on the training rows `idx` only. */
export function fitPipeline(table: Table, idx: ArrayLike<number>, columns: Array<{ name: string; type: ColumnType }>, transforms: TransformSpec[], opts: PipelineOptions): Pipeline {
  const encoders: Encoder[] = [];
  const featureNames: string[] = [];
  const specs: FeatureSpec[] = [];
  const rows = Array.from(idx);
  for (const col of columns) {
    const all = table.get(col.name) ?? [];
    const values = rows.map((i) => all[i] ?? null);
    const impute = declared(transforms, 'IMPUTE', col.name);
    const standardize = opts.standardize || !!declared(transforms, 'STANDARDIZE', col.name);
    const tfidf = declared(transforms, 'TFIDF', col.name);
    const oneHot = declared(transforms, 'ONE_HOT', col.name);
    const dates = declared(transforms, 'DATE_PARTS', col.name);
    specs.push({ name: col.name, type: col.type, nullable: !!impute || all.some((v) => v === null) });
    if (tfidf || col.type === 'text') {
      const ngram = tfidf?.ngram ?? opts.textNgram;
      const maxFeatures = tfidf?.maxFeatures ?? opts.textMaxFeatures;
      const df = new Map<string, number>();
      for (const v of values) for (const t of new Set(tokenize(v === null ? '' : String(v), ngram))) df.set(t, (df.get(t) ?? 0) + 1);
      const minDf = values.length >= 20 ? 2 : 1;
      const vocab = [...df].filter(([, c]) => c >= minDf).sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1)).slice(0, maxFeatures).map(([t]) => t);
      const idf = vocab.map((t) => Math.log((1 + values.length) / (1 + df.get(t)!)) + 1);
      encoders.push({ kind: 'tfidf', column: col.name, vocab, idf, ngram });
      featureNames.push(...vocab.map((t) => `${col.name}:${t}`));
    } else if (oneHot || col.type === 'category') {
      const present = values.map(toCategory).filter((v): v is string => v !== null);
      const constant = impute?.strategy === 'CONSTANT' ? toCategory(imputeConstant(impute.value, col.type)) : null;
      const fill = constant ?? modeOf(present) ?? '';
      const counts = new Map<string, number>();
      for (const v of present) counts.set(v, (counts.get(v) ?? 0) + 1);
      const ranked = [...counts].sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1)).map(([c]) => c);
      const categories = ranked.slice(0, oneHot?.maxCategories ?? opts.maxCategories);
      const other = ranked.length > categories.length;
      encoders.push({ kind: 'onehot', column: col.name, fill, categories, other });
      featureNames.push(...categories.map((c) => `${col.name}=${c}`), ...(other ? [`${col.name}=(other)`] : []));
    } else if (dates || col.type === 'datetime') {
      const present = values.map(toNumber).filter((v): v is number => v !== null);
      const fill = numericFill(present, impute, 'datetime', 'MEAN');
      const parts = (dates?.parts as DatePart[] | undefined) ?? DEFAULT_DATE_PARTS;
      const filled = values.map((v) => toNumber(v) ?? fill);
      const center: number[] = [];
      const scale: number[] = [];
      for (const p of parts) {
        const xs = filled.map((ms) => datePart(ms, p));
        const m = meanOf(xs);
        center.push(standardize ? m : 0);
        scale.push(standardize ? stdOf(xs, m) : 1);
      }
      encoders.push({ kind: 'dateparts', column: col.name, fill, parts, center, scale });
      featureNames.push(...parts.map((p) => `${col.name}.${p}`));
    } else {
      const present = values.map(toNumber).filter((v): v is number => v !== null);
      const fill = numericFill(present, impute, col.type, col.type === 'boolean' ? 'MODE' : 'MEAN');
      const filled = values.map((v) => toNumber(v) ?? fill);
      const m = meanOf(filled);
      encoders.push({ kind: 'numeric', column: col.name, fill, center: standardize ? m : 0, scale: standardize ? stdOf(filled, m) : 1 });
      featureNames.push(col.name);
    }
  }
  return { encoders, featureNames, columns: specs };
}

/** The feature matrix of rows `idx` (all rows when omitted). */
export function applyPipeline(p: Pipeline, table: Table, idx?: ArrayLike<number>): number[][] {
  const n = idx ? idx.length : (table.values().next().value?.length ?? 0);
  const rowAt = (k: number) => (idx ? idx[k]! : k);
  const out: number[][] = Array.from({ length: n }, () => []);
  for (const e of p.encoders) {
    const col = table.get(e.column) ?? [];
    for (let k = 0; k < n; k++) {
      const v = col[rowAt(k)] ?? null;
      const row = out[k]!;
      if (e.kind === 'numeric') row.push(((toNumber(v) ?? e.fill) - e.center) / e.scale);
      else if (e.kind === 'onehot') {
        const c = toCategory(v) ?? e.fill;
        let hit = false;
        for (const cat of e.categories) {
          const on = cat === c;
          hit ||= on;
          row.push(on ? 1 : 0);
        }
        if (e.other) row.push(hit ? 0 : 1);
      } else if (e.kind === 'dateparts') {
        const ms = toNumber(v) ?? e.fill;
        e.parts.forEach((part, j) => row.push((datePart(ms, part) - e.center[j]!) / e.scale[j]!));
      } else {
        const counts = new Map<string, number>();
        for (const t of tokenize(v === null ? '' : String(v), e.ngram)) counts.set(t, (counts.get(t) ?? 0) + 1);
        const vec = e.vocab.map((t, j) => (counts.get(t) ?? 0) * e.idf[j]!);
        const norm = Math.sqrt(vec.reduce((a, b) => a + b * b, 0)) || 1;
        for (const x of vec) row.push(x / norm);
      }
    }
  }
  return out;
}
