/** One page of a Relay connection. */
export interface Page<T> {
  items: T[];
  hasNextPage: boolean;
  endCursor: string | null;
}

export interface ListOptions {
  /** Items per request (1–100; default 50). */
  pageSize?: number;
  /** Start after this cursor (a page's endCursor). */
  after?: string | null;
  /** Stop after this many items in all. */
  limit?: number;
  signal?: AbortSignal;
}

export type FetchPage<T> = (first: number, after: string | null, signal?: AbortSignal) => Promise<Page<T>>;

/**
 * A list over a Relay connection, fetched page by page as it is iterated:
 * `for await (const item of list)` walks every item, `for await (const page of list.pages())`
 * every page; `toArray()` collects them and `firstPage()` fetches just one.
 */
export class PageIterator<T> implements AsyncIterable<T> {
  constructor(private readonly fetchPage: FetchPage<T>, private readonly opts: ListOptions = {}) {}

  async *pages(): AsyncGenerator<Page<T>, void, undefined> {
    let after = this.opts.after ?? null;
    let left = this.opts.limit ?? Infinity;
    const size = this.opts.pageSize ?? 50;
    while (left > 0) {
      const page = await this.fetchPage(Math.min(size, Number.isFinite(left) ? left : size), after, this.opts.signal);
      const items = page.items.slice(0, Number.isFinite(left) ? left : undefined);
      left -= items.length;
      yield { ...page, items };
      if (!page.hasNextPage || !page.endCursor || items.length === 0) return;
      after = page.endCursor;
    }
  }

  async *[Symbol.asyncIterator](): AsyncGenerator<T, void, undefined> {
    for await (const page of this.pages()) yield* page.items;
  }

  firstPage(): Promise<Page<T>> {
    return this.fetchPage(this.opts.pageSize ?? 50, this.opts.after ?? null, this.opts.signal);
  }

  async toArray(): Promise<T[]> {
    const out: T[] = [];
    for await (const item of this) out.push(item);
    return out;
  }
}

/** A Page from a connection result. */
export function toPage<N>(conn: { edges: Array<{ node: N }>; pageInfo: { hasNextPage: boolean; endCursor?: string | null } }): Page<N> {
  return { items: conn.edges.map((e) => e.node), hasNextPage: conn.pageInfo.hasNextPage, endCursor: conn.pageInfo.endCursor ?? null };
}
