import { z } from 'zod';
import { badInput } from './errors';

/** Parses with zod; the first issue becomes BAD_USER_INPUT naming the field (e.g. `input.email`). */
export function parseInput<S extends z.ZodType>(schema: S, value: unknown, root = 'input'): z.infer<S> {
  const unstorable = unstorableTextPath(value, root);
  if (unstorable) throw badInput(unstorable, 'contains a NUL character or an unpaired surrogate, which is not valid text');
  const r = schema.safeParse(value);
  if (r.success) return r.data;
  const issue = r.error.issues[0];
  const path = issue.path.reduce<string>(
    (acc, p) => (typeof p === 'number' ? `${acc}[${p}]` : `${acc}.${String(p)}`),
    root,
  );
  // zod names unknown keys in `keys` rather than in the path.
  const field = issue.code === 'unrecognized_keys' ? `${path}.${issue.keys[0]}` : path;
  return (() => {
    throw badInput(field, issue.code === 'unrecognized_keys' ? 'unknown field' : issue.message);
  })();
}

/** A URL Nimbus will POST webhooks to: http(s), at most 2,000 characters. */
export const webhookUrlSchema = z.url({ protocol: /^https?$/, error: 'must be an http(s) URL' }).max(2000);

/** Outside development, webhooks go over TLS only (their bodies carry outputs). */
export function requireHttpsWebhook(field: string, url: string | null | undefined, allowPlainHttp: boolean): void {
  if (url && !allowPlainHttp && !url.startsWith('https://')) throw badInput(field, 'must be an https URL');
}

/** A NUL, or a surrogate not in a high-low pair: text Postgres cannot store (text and jsonb). Native, so a 12 MB image costs ~1 ms. */
// (String#isWellFormed / #toWellFormed: Node 20, ES2024; the project's lib is ES2023.)
type Es2024String = string & { isWellFormed(): boolean; toWellFormed(): string };
const unstorable = (s: string): boolean => s.includes('\u0000') || !(s as Es2024String).isWellFormed();

/**
 * The path (`input.input.text`, `input.rows[2].name`) of the first string in `value`, as a value or
 * as an object key, that no Postgres text or jsonb column can hold: without this check such input
 * passes validation and fails at the INSERT, as INTERNAL. Null when there is none.
 */
export function unstorableTextPath(value: unknown, root: string): string | null {
  if (typeof value === 'string') return unstorable(value) ? root : null;
  if (Array.isArray(value)) {
    for (let i = 0; i < value.length; i++) {
      const found = unstorableTextPath(value[i], `${root}[${i}]`);
      if (found) return found;
    }
    return null;
  }
  if (value && typeof value === 'object') {
    for (const [k, v] of Object.entries(value)) {
      if (unstorable(k)) return `${root}.${(k as Es2024String).toWellFormed().replaceAll('\u0000', '\uFFFD')}`;
      const found = unstorableTextPath(v, `${root}.${k}`);
      if (found) return found;
    }
  }
  return null;
}
