/**
 * Streaming reading of CSV and JSONL datasets: UTF-8 validation naming the line, a size limit,
 * ragged rows and non-object JSONL lines named by line, a column limit; and the profile of each
 * column (inferred type, missing and distinct counts, min/max/mean). Pure (csv-parse only): the API
 * profiles uploads with it and node agents read datasets for training with it.
 */
import { createHash, type Hash } from 'node:crypto';
import { isUtf8 } from 'node:buffer';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { parse } from 'csv-parse';
import type { ColumnProfile, ColumnType } from './training.contract';

export type DatasetFormat = 'CSV' | 'JSONL';

export interface ParseLimits {
  maxBytes: number;
  maxColumns: number;
}

export const DEFAULT_MAX_COLUMNS = 500;
/** Distinct values are counted exactly up to this many per column, then estimated (HyperLogLog). */
export const DISTINCT_EXACT_CAP = 10_000;

/** A file that cannot become a dataset version; the message names the line or column. */
export class DatasetFormatError extends Error {
  constructor(message: string, readonly line?: number, readonly column?: string) {
    super(message);
    this.name = 'DatasetFormatError';
  }
}

export type RawValue = string | number | boolean | null;
export interface RawRow {
  line: number;
  /**
   * Column name → value, with no prototype: a column named "__proto__" is a field like any other,
   * and one named "constructor" or "toString" that a row lacks reads as absent. Read it with valueIn.
   */
  values: Record<string, RawValue>;
}

/** An empty row-values record with no prototype (see RawRow.values). */
const newValues = (): Record<string, RawValue> => Object.create(null) as Record<string, RawValue>;

/** A row's own value of a column (undefined where the row lacks it), never an inherited member. */
export const valueIn = (values: Readonly<Record<string, unknown>>, column: string): unknown =>
  Object.hasOwn(values, column) ? values[column] : undefined;

// ---- bytes: size limit, hash, UTF-8 validation -----------------------------------------------------

/** Validates UTF-8 across chunk boundaries and counts lines, so an error names its line. */
class Utf8Checker {
  private need = 0;
  private lo = 0x80;
  private hi = 0xbf;
  line = 1;

  push(chunk: Uint8Array): void {
    if (this.need === 0 && isUtf8(chunk)) {
      for (let i = chunk.indexOf(10); i !== -1; i = chunk.indexOf(10, i + 1)) this.line++;
      return;
    }
    for (let i = 0; i < chunk.length; i++) {
      const b = chunk[i]!;
      if (this.need === 0) {
        if (b <= 0x7f) {
          if (b === 10) this.line++;
          continue;
        }
        if (b >= 0xc2 && b <= 0xdf) this.start(1, 0x80, 0xbf);
        else if (b === 0xe0) this.start(2, 0xa0, 0xbf);
        else if ((b >= 0xe1 && b <= 0xec) || b === 0xee || b === 0xef) this.start(2, 0x80, 0xbf);
        else if (b === 0xed) this.start(2, 0x80, 0x9f);
        else if (b === 0xf0) this.start(3, 0x90, 0xbf);
        else if (b >= 0xf1 && b <= 0xf3) this.start(3, 0x80, 0xbf);
        else if (b === 0xf4) this.start(3, 0x80, 0x8f);
        else this.fail();
      } else {
        if (b < this.lo || b > this.hi) this.fail();
        this.lo = 0x80;
        this.hi = 0xbf;
        this.need--;
      }
    }
  }

  end(): void {
    if (this.need > 0) this.fail();
  }

  private start(need: number, lo: number, hi: number) {
    this.need = need;
    this.lo = lo;
    this.hi = hi;
  }

  private fail(): never {
    throw new DatasetFormatError(`line ${this.line}: the file is not valid UTF-8 text`, this.line);
  }
}

export interface ByteStats {
  bytes: number;
  hash: Hash;
}

/** Text chunks of a byte stream that is checked for size and encoding and hashed on the way. */
async function* checkedText(source: AsyncIterable<Uint8Array>, limits: ParseLimits, stats: ByteStats): AsyncGenerator<string> {
  const utf8 = new Utf8Checker();
  const decoder = new TextDecoder('utf-8');
  for await (const chunk of source) {
    stats.bytes += chunk.length;
    if (stats.bytes > limits.maxBytes) throw new DatasetFormatError(`the file is larger than the limit of ${limits.maxBytes} bytes`);
    stats.hash.update(chunk);
    utf8.push(chunk);
    const text = decoder.decode(chunk, { stream: true });
    if (text) yield text;
  }
  utf8.end();
  const rest = decoder.decode();
  if (rest) yield rest;
  if (stats.bytes === 0) throw new DatasetFormatError('the file is empty');
}

// ---- records ------------------------------------------------------------------------------------

/** Rows of a CSV (header line first) or JSONL (one JSON object per line) file, as raw values. */
export async function* readRows(
  source: AsyncIterable<Uint8Array>, format: DatasetFormat, limits: ParseLimits, stats: ByteStats = { bytes: 0, hash: createHash('sha256') },
): AsyncGenerator<RawRow> {
  const text = checkedText(source, limits, stats);
  if (format === 'CSV') yield* csvRows(text, limits);
  else yield* jsonlRows(text, limits);
}

async function* csvRows(text: AsyncGenerator<string>, limits: ParseLimits): AsyncGenerator<RawRow> {
  const parser = parse({ bom: true, relax_column_count: true, skip_empty_lines: true, info: true });
  let failure: unknown = null;
  const feeding = pipeline(Readable.from(text), parser).catch((err: unknown) => {
    failure ??= err;
  });
  let header: string[] | null = null;
  try {
    for await (const item of parser as AsyncIterable<{ record: string[]; info: { lines: number } }>) {
      const { record, info } = item;
      if (!header) {
        header = record.map((h) => h.trim());
        if (header.length > limits.maxColumns) {
          throw new DatasetFormatError(`line 1: ${header.length} columns, more than the limit of ${limits.maxColumns}`, 1);
        }
        const seen = new Set<string>();
        header.forEach((h, i) => {
          if (!h) throw new DatasetFormatError(`line 1: column ${i + 1} has an empty name`, 1);
          if (seen.has(h)) throw new DatasetFormatError(`line 1: column "${h}" appears twice`, 1, h);
          seen.add(h);
        });
        continue;
      }
      if (record.length !== header.length) {
        throw new DatasetFormatError(`line ${info.lines}: expected ${header.length} fields (as in the header), found ${record.length}`, info.lines);
      }
      const values = newValues();
      for (let i = 0; i < header.length; i++) {
        const v = record[i]!;
        values[header[i]!] = v === '' ? null : v;
      }
      yield { line: info.lines, values };
    }
  } catch (err) {
    await feeding;
    if (err instanceof DatasetFormatError) throw err;
    throw asFormatError(failure ?? err);
  }
  await feeding;
  if (failure) throw asFormatError(failure);
  if (!header) throw new DatasetFormatError('the file has no header line');
}

function asFormatError(err: unknown): Error {
  if (err instanceof DatasetFormatError) return err;
  const e = err as { code?: string; lines?: number; message?: string };
  if (typeof e.code === 'string' && e.code.startsWith('CSV_')) {
    const line = e.lines ?? undefined;
    return new DatasetFormatError(`line ${line ?? '?'}: malformed CSV (${e.message?.replace(/^Invalid \w+ ?: ?/, '') ?? e.code})`, line);
  }
  return err as Error;
}

async function* jsonlRows(text: AsyncGenerator<string>, limits: ParseLimits): AsyncGenerator<RawRow> {
  let carry = '';
  let line = 0;
  const columns = new Set<string>();
  const parseLine = (raw: string): RawRow | null => {
    line++;
    const s = raw.endsWith('\r') ? raw.slice(0, -1) : raw;
    if (!s.trim()) return null;
    let obj: unknown;
    try {
      obj = JSON.parse(line === 1 && s.charCodeAt(0) === 0xfeff ? s.slice(1) : s);
    } catch (err) {
      throw new DatasetFormatError(`line ${line}: invalid JSON (${(err as Error).message})`, line);
    }
    if (!obj || typeof obj !== 'object' || Array.isArray(obj)) throw new DatasetFormatError(`line ${line}: expected a JSON object, found ${Array.isArray(obj) ? 'an array' : JSON.stringify(obj)?.slice(0, 40)}`, line);
    // JSON.parse makes "__proto__" an own key; Object.entries lists it; newValues() keeps it a field.
    const values = newValues();
    for (const [k, v] of Object.entries(obj)) {
      if (!columns.has(k)) {
        if (!k.trim()) throw new DatasetFormatError(`line ${line}: a key is empty`, line);
        columns.add(k);
        if (columns.size > limits.maxColumns) throw new DatasetFormatError(`line ${line}: more than the limit of ${limits.maxColumns} columns`, line, k);
      }
      values[k] = v === null || v === undefined ? null : typeof v === 'object' ? JSON.stringify(v) : (v as RawValue);
      if (values[k] === '') values[k] = null;
    }
    return { line, values };
  };
  for await (const chunk of text) {
    const parts = (carry + chunk).split('\n');
    carry = parts.pop()!;
    for (const p of parts) {
      const r = parseLine(p);
      if (r) yield r;
    }
  }
  if (carry) {
    const r = parseLine(carry);
    if (r) yield r;
  }
}

// ---- values ---------------------------------------------------------------------------------------

const INT_RE = /^[+-]?\d+$/;
const NUM_RE = /^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$/;
const BOOL_RE = /^(true|false)$/i;
const DATE_RE = /^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?)?$/;

type Kind = 'int' | 'num' | 'bool' | 'date' | 'str';

function kindOf(v: string | number | boolean): Kind {
  if (typeof v === 'number') return Number.isInteger(v) ? 'int' : 'num';
  if (typeof v === 'boolean') return 'bool';
  const s = v.trim();
  if (INT_RE.test(s) && Number.isSafeInteger(Number(s))) return 'int';
  if (NUM_RE.test(s)) return 'num';
  if (BOOL_RE.test(s)) return 'bool';
  if (DATE_RE.test(s) && !Number.isNaN(parseDateTime(s))) return 'date';
  return 'str';
}

/**
 * Epoch ms of a datetime text. A date and time without a zone ("2024-01-01 10:00") is read as UTC:
 * JavaScript reads it in the process's own time zone, so a node in another zone than the one that
 * trained a model would compute other date parts from the same rows. NaN when it is not a date.
 */
export function parseDateTime(text: string): number {
  const t = text.trim();
  const naive = /^(\d{4}-\d{2}-\d{2})[ T](\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?)$/.exec(t);
  return Date.parse(naive ? `${naive[1]}T${naive[2]}Z` : t);
}

/**
 * An IMPUTE constant as a value of its column's type, as the table holds it (booleans true/false from
 * booleans, "true"/"false" in any case or 1/0; datetimes as epoch ms from a date string; numbers as
 * finite numbers; anything else as a string), or null where it is none. The API refuses a constant
 * this gives null for (training.service.ts); an older job's falls back to the column's default fill.
 */
export function imputeConstant(value: unknown, type: ColumnType): number | string | boolean | null {
  if (value === null || value === undefined) return null;
  switch (type) {
    case 'boolean':
      if (typeof value === 'boolean') return value;
      if (value === 0 || value === 1) return value === 1;
      if (typeof value === 'string' && /^(true|false)$/i.test(value.trim())) return value.trim().toLowerCase() === 'true';
      return null;
    case 'number':
    case 'integer':
      return typeof value === 'number' && Number.isFinite(value) ? value : null;
    case 'datetime': {
      const ms = typeof value === 'string' ? parseDateTime(value) : NaN;
      return Number.isFinite(ms) ? ms : null;
    }
    default:
      return String(value);
  }
}

/** A raw value as its column's type: numbers (datetimes as epoch ms, booleans as 0/1 stay booleans), strings, or null. */
export function coerce(v: RawValue | undefined, type: ColumnType): number | string | boolean | null {
  if (v === null || v === undefined) return null;
  switch (type) {
    case 'number':
    case 'integer': {
      const n = typeof v === 'number' ? v : typeof v === 'boolean' ? Number(v) : Number(v.trim());
      return Number.isFinite(n) ? n : null;
    }
    case 'boolean':
      if (typeof v === 'boolean') return v;
      if (typeof v === 'number') return v !== 0;
      return /^true$/i.test(v.trim()) ? true : /^false$/i.test(v.trim()) ? false : null;
    case 'datetime': {
      const ms = typeof v === 'number' ? v : parseDateTime(String(v));
      return Number.isFinite(ms) ? ms : null;
    }
    default:
      return String(v);
  }
}

// ---- profile --------------------------------------------------------------------------------------

/** HyperLogLog (2^12 registers, ~1.6% error) for columns with more distinct values than the exact cap. */
class HyperLogLog {
  private readonly m = 4096;
  private readonly reg = new Uint8Array(4096);

  add(s: string): void {
    const h = fnv1a(s);
    const idx = h >>> 20;
    const w = (h << 12) >>> 0;
    const rank = w === 0 ? 21 : Math.clz32(w) + 1;
    if (rank > this.reg[idx]!) this.reg[idx] = rank;
  }

  estimate(): number {
    let sum = 0;
    let zeros = 0;
    for (const r of this.reg) {
      sum += 2 ** -r;
      if (r === 0) zeros++;
    }
    const alpha = 0.7213 / (1 + 1.079 / this.m);
    const e = (alpha * this.m * this.m) / sum;
    return Math.round(e <= 2.5 * this.m && zeros > 0 ? this.m * Math.log(this.m / zeros) : e);
  }
}

function fnv1a(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  // final avalanche (murmur3 fmix32) so the high bits are well mixed
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

class ColumnStats {
  missing = 0;
  n = 0;
  readonly kinds: Record<Kind, number> = { int: 0, num: 0, bool: 0, date: 0, str: 0 };
  sum = 0;
  numeric = 0;
  min = Infinity;
  max = -Infinity;
  chars = 0;
  tokens = 0;
  distinct: Map<string, number> | null = new Map();
  hll: HyperLogLog | null = null;

  constructor(readonly name: string, missingBefore: number) {
    this.missing = missingBefore;
  }

  add(v: RawValue | undefined): void {
    if (v === null || v === undefined) {
      this.missing++;
      return;
    }
    this.n++;
    const k = kindOf(v);
    this.kinds[k]++;
    if (k === 'int' || k === 'num') {
      const x = typeof v === 'number' ? v : Number(String(v).trim());
      this.numeric++;
      this.sum += x;
      if (x < this.min) this.min = x;
      if (x > this.max) this.max = x;
    } else if (k === 'str') {
      const s = String(v);
      this.chars += s.length;
      this.tokens += s.trim().split(/\s+/).length;
    }
    const key = typeof v === 'string' ? v.trim() : String(v);
    if (this.distinct) {
      this.distinct.set(key, (this.distinct.get(key) ?? 0) + 1);
      if (this.distinct.size > DISTINCT_EXACT_CAP) {
        this.hll = new HyperLogLog();
        for (const d of this.distinct.keys()) this.hll.add(d);
        this.distinct = null;
      }
    } else this.hll!.add(key);
  }

  profile(): ColumnProfile {
    const { kinds, n } = this;
    const distinctCount = this.distinct ? this.distinct.size : this.hll!.estimate();
    let type: ColumnType;
    if (n === 0) type = 'category';
    else if (kinds.bool === n) type = 'boolean';
    else if (kinds.int === n) type = 'integer';
    else if (kinds.int + kinds.num === n) type = 'number';
    else if (kinds.date === n) type = 'datetime';
    else {
      const strings = kinds.str || 1;
      const avgTokens = this.tokens / strings;
      const avgChars = this.chars / strings;
      type = avgTokens >= 3 || (avgChars > 30 && distinctCount > 0.5 * n) ? 'text' : 'category';
    }
    const numericType = type === 'integer' || type === 'number';
    const top = (type === 'category' || type === 'boolean') && this.distinct
      ? [...this.distinct].sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1)).slice(0, 20).map(([value, count]) => ({ value, count }))
      : undefined;
    return {
      name: this.name, type, missingCount: this.missing, distinctCount, distinctApproximate: this.distinct === null,
      min: numericType ? this.min : null, max: numericType ? this.max : null,
      mean: numericType && this.numeric ? this.sum / this.numeric : null,
      ...(top ? { topValues: top } : {}),
    };
  }
}

export interface DatasetProfile {
  rowCount: number;
  bytes: number;
  /** SHA-256 of the file's bytes, hex. */
  contentHash: string;
  columns: ColumnProfile[];
}

/** Reads the whole file once: validates it, profiles every column and hashes the bytes. */
export async function profileDataset(source: AsyncIterable<Uint8Array>, format: DatasetFormat, limits: ParseLimits): Promise<DatasetProfile> {
  const stats: ByteStats = { bytes: 0, hash: createHash('sha256') };
  const cols = new Map<string, ColumnStats>();
  let rows = 0;
  for await (const row of readRows(source, format, limits, stats)) {
    for (const k of Object.keys(row.values)) if (!cols.has(k)) cols.set(k, new ColumnStats(k, rows));
    for (const c of cols.values()) c.add(valueIn(row.values, c.name) as RawValue | undefined);
    rows++;
  }
  if (rows === 0) throw new DatasetFormatError('the file has no data rows');
  return { rowCount: rows, bytes: stats.bytes, contentHash: stats.hash.digest('hex'), columns: [...cols.values()].map((c) => c.profile()) };
}

/** Every row, values coerced to the profiled column types: the table a trial trains on. */
export async function readTable(
  source: AsyncIterable<Uint8Array>, format: DatasetFormat, columns: Array<{ name: string; type: ColumnType }>, maxBytes = Number.MAX_SAFE_INTEGER,
): Promise<{ rowCount: number; columns: Map<string, Array<number | string | boolean | null>> }> {
  const out = new Map(columns.map((c) => [c.name, [] as Array<number | string | boolean | null>]));
  let rowCount = 0;
  for await (const row of readRows(source, format, { maxBytes, maxColumns: Number.MAX_SAFE_INTEGER })) {
    for (const c of columns) out.get(c.name)!.push(coerce(valueIn(row.values, c.name) as RawValue | undefined, c.type));
    rowCount++;
  }
  return { rowCount, columns: out };
}
