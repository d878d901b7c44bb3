import { randomBytes } from 'node:crypto';

/** A decoded request parameter: form-encoded v1 bodies and query strings only hold strings, v2 JSON holds any JSON. */
export type Param = string | number | boolean | null | Param[] | { [key: string]: Param };
export type Params = { [key: string]: Param };

/** An error Stripe would answer with: `{ error: { type, code, message, param } }` at `status`. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly type: string,
    message: string,
    readonly code?: string,
    readonly param?: string,
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
  }

  body(): { error: Record<string, string> } {
    const error: Record<string, string> = { type: this.type, message: this.message };
    if (this.code) error.code = this.code;
    if (this.param) error.param = this.param;
    return { error };
  }
}

export const invalid = (message: string, param?: string, code?: string): ApiError =>
  new ApiError(400, 'invalid_request_error', message, code, param);

export const missing = (kind: string, id: string, param = 'id'): ApiError =>
  new ApiError(404, 'invalid_request_error', `No such ${kind}: '${id}'`, 'resource_missing', param);

/**
 * Decodes Stripe's bracket encoding (`a[b][c]=x`, `items[0][price]=p`, `expand[]=x`) the way the SDK writes it:
 * objects whose keys are all indices become arrays.
 */
export function parseForm(text: string): Params {
  const root: Params = {};
  for (const [key, value] of new URLSearchParams(text)) {
    const m = /^([^[\]]+)((?:\[[^[\]]*\])*)$/.exec(key);
    if (!m) throw invalid(`Invalid parameter name: ${key}`, key);
    const path = [m[1], ...[...m[2].matchAll(/\[([^[\]]*)\]/g)].map((g) => g[1])];
    let node: Params = root;
    path.forEach((part, i) => {
      const name = part === '' ? String(Object.keys(node).length) : part;
      if (i === path.length - 1) {
        node[name] = value;
        return;
      }
      const next = node[name];
      if (next === undefined || typeof next !== 'object' || next === null || Array.isArray(next)) node[name] = {};
      node = node[name] as Params;
    });
  }
  return arraysFromIndices(root) as Params;
}

function arraysFromIndices(value: Param): Param {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return value;
  const keys = Object.keys(value);
  const entries = keys.map((k) => [k, arraysFromIndices(value[k])] as const);
  const isList = keys.length > 0 && keys.every((k) => /^\d+$/.test(k)) &&
    keys.map(Number).sort((a, b) => a - b).every((n, i) => n === i);
  if (isList) return entries.sort((a, b) => Number(a[0]) - Number(b[0])).map(([, v]) => v);
  return Object.fromEntries(entries);
}

/** Typed access to decoded parameters; a wrong type is the 400 Stripe gives, naming the parameter. */
export class Reader {
  constructor(readonly params: Params, private readonly prefix = '') {}

  has(name: string): boolean {
    return this.params[name] !== undefined;
  }

  private name(name: string): string {
    return this.prefix ? `${this.prefix}[${name}]` : name;
  }

  /** Stripe refuses parameters it does not know, which catches typos in our own requests. */
  only(allowed: readonly string[]): this {
    for (const key of Object.keys(this.params)) {
      if (key !== 'expand' && !allowed.includes(key)) throw invalid(`Received unknown parameter: ${this.name(key)}`, this.name(key));
    }
    return this;
  }

  str(name: string): string | undefined {
    const v = this.params[name];
    if (v === undefined || v === null) return undefined;
    if (typeof v === 'string') return v;
    if (typeof v === 'number' || typeof v === 'boolean') return String(v);
    throw invalid(`Invalid string: ${this.name(name)}`, this.name(name));
  }

  reqStr(name: string): string {
    const v = this.str(name);
    if (v === undefined || v === '') throw invalid(`Missing required param: ${this.name(name)}.`, this.name(name), 'parameter_missing');
    return v;
  }

  int(name: string): number | undefined {
    const v = this.str(name);
    if (v === undefined || v === '') return undefined;
    if (!/^-?\d+$/.test(v) || !Number.isSafeInteger(Number(v))) throw invalid(`Invalid integer: ${v}`, this.name(name));
    return Number(v);
  }

  bool(name: string): boolean | undefined {
    const v = this.str(name);
    if (v === undefined || v === '') return undefined;
    if (v !== 'true' && v !== 'false') throw invalid(`Invalid boolean: ${v}`, this.name(name));
    return v === 'true';
  }

  obj(name: string): Reader | undefined {
    const v = this.params[name];
    if (v === undefined || v === '') return undefined;
    if (typeof v !== 'object' || v === null || Array.isArray(v)) throw invalid(`Invalid object: ${this.name(name)}`, this.name(name));
    return new Reader(v, this.name(name));
  }

  list(name: string): Reader[] {
    const v = this.params[name];
    if (v === undefined || v === '') return [];
    if (!Array.isArray(v)) throw invalid(`Invalid array: ${this.name(name)}`, this.name(name));
    return v.map((item, i) => {
      if (typeof item !== 'object' || item === null || Array.isArray(item)) throw invalid(`Invalid object: ${this.name(name)}[${i}]`);
      return new Reader(item, `${this.name(name)}[${i}]`);
    });
  }

  strings(name: string): string[] {
    const v = this.params[name];
    if (v === undefined || v === '') return [];
    const items = Array.isArray(v) ? v : [v];
    return items.map((item) => {
      if (typeof item !== 'string') throw invalid(`Invalid array of strings: ${this.name(name)}`, this.name(name));
      return item;
    });
  }

  /** A string map such as `metadata` or `payload`. */
  dict(name: string): Record<string, string> | undefined {
    const r = this.obj(name);
    if (!r) return undefined;
    return Object.fromEntries(Object.keys(r.params).map((k) => [k, r.str(k) ?? '']));
  }
}

const ALPHABET = '0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz';

/** An id with Stripe's prefix and a random base62 tail, e.g. `cus_Q2x9...`. */
export function newId(prefix: string, length = 24): string {
  const bytes = randomBytes(length);
  let tail = '';
  for (const b of bytes) tail += ALPHABET[b % ALPHABET.length];
  return `${prefix}_${tail}`;
}
