import { z } from 'zod';
import { badInput } from './errors';

/** Parses with zod; the first issue becomes BAD_USER_INPUT naming the field (e.g. `input.email`). */
export function parseInput<S extends z.ZodType>(schema: S, value: unknown, root = 'input'): z.infer<S> {
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
