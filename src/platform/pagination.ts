import { badInput } from './errors';
import { isUuid } from './uuid';

export interface PageArgs {
  first?: number | null;
  after?: string | null;
}
export interface Page<T> {
  edges: Array<{ cursor: string; node: T }>;
  pageInfo: { hasNextPage: boolean; endCursor: string | null };
}
export interface Keyset {
  createdAt: Date;
  id: string;
}

export const MAX_PAGE = 100;
const DEFAULT_PAGE = 20;

/** Opaque cursor over the (created_at, id) keyset that every list is ordered by (newest first). */
export const encodeCursor = (k: Keyset) => Buffer.from(`${k.createdAt.toISOString()}|${k.id}`).toString('base64url');

export function decodeCursor(cursor: string): Keyset {
  const [at, id] = Buffer.from(cursor, 'base64url').toString().split('|');
  const createdAt = new Date(at);
  // Every listed row has a uuid id: anything else is not one of our cursors (and would fail in SQL).
  if (!id || !isUuid(id) || Number.isNaN(createdAt.getTime())) throw badInput('after', 'not a valid cursor');
  return { createdAt, id };
}

export function pageSize(args: PageArgs): number {
  const first = args.first ?? DEFAULT_PAGE;
  if (!Number.isInteger(first) || first < 1 || first > MAX_PAGE) throw badInput('first', `must be between 1 and ${MAX_PAGE}`);
  return first;
}

/**
 * Keyset pagination: `fetch(after, limit)` returns rows ordered by (created_at DESC, id DESC)
 * strictly after the cursor; one extra row tells whether there is a next page.
 */
export async function paginate<T extends Keyset>(
  args: PageArgs,
  fetch: (after: Keyset | null, limit: number) => Promise<T[]>,
): Promise<Page<T>> {
  const first = pageSize(args);
  const after = args.after ? decodeCursor(args.after) : null;
  const rows = await fetch(after, first + 1);
  const page = rows.slice(0, first);
  const edges = page.map((node) => ({ cursor: encodeCursor(node), node }));
  return { edges, pageInfo: { hasNextPage: rows.length > first, endCursor: edges.at(-1)?.cursor ?? null } };
}

/**
 * SQL fragment + params for "after this keyset" with params numbered from `start`. The cursor's
 * time has milliseconds (a JavaScript Date) while `created_at` has microseconds, and rows made in
 * one statement share one: the cursor row's own `created_at` is read back from `table` by its id,
 * so rows in the same millisecond as the cursor are neither skipped nor repeated. The cursor's
 * time serves only if that row is gone.
 */
export function keysetWhere(after: Keyset | null, start: number, table: string, alias = ''): { sql: string; params: unknown[] } {
  if (!after) return { sql: 'TRUE', params: [] };
  const a = alias ? `${alias}.` : '';
  const at = `COALESCE((SELECT c.created_at FROM ${table} c WHERE c.id = $${start + 1}), $${start})`;
  return { sql: `(${a}created_at, ${a}id) < (${at}, $${start + 1}::uuid)`, params: [after.createdAt, after.id] };
}
