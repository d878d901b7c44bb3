/**
 * A small read-through cache for per-request lookups (credentials, tenant state) that keeps
 * their staleness bound and takes them off the request path:
 *
 * - an entry is served only while younger than `ttlMs`, counted from when its read *began*, so
 *   a change made elsewhere is seen within ttlMs, as with a plain TTL;
 * - an entry used past half its life is refreshed in the background while the request goes on
 *   with it (refresh-ahead): a key or tenant in steady use never waits for the database;
 * - concurrent misses for one key share one load (single flight), so an expiry under load is
 *   one query, not one per request;
 * - `forget` drops an entry and discards any load already running for it, so a change this
 *   process makes is seen at once, never overwritten by an older read finishing later.
 *
 * A load that answers `null` (no such key, a revoked credential) is not cached and removes the
 * entry. A failed background refresh leaves the entry to expire on its own; a failed load that a
 * request waits for fails that request.
 */
export class RefreshingCache<K, V> {
  private readonly entries = new Map<K, { value: V; loadedAt: number }>();
  private readonly inflight = new Map<K, Promise<V | null>>();
  /** Bumped by every forget: a load that began before it does not store its result. */
  private epoch = 0;

  constructor(private readonly opts: { ttlMs: number; maxEntries?: number; now?: () => number }) {}

  private now(): number {
    return this.opts.now?.() ?? Date.now();
  }

  async get(key: K, load: () => Promise<V | null>): Promise<V | null> {
    const hit = this.entries.get(key);
    if (hit) {
      const age = this.now() - hit.loadedAt;
      if (age < this.opts.ttlMs) {
        if (age >= this.opts.ttlMs / 2 && !this.inflight.has(key)) this.load(key, load).catch(() => undefined);
        return hit.value;
      }
      this.entries.delete(key);
    }
    return this.load(key, load);
  }

  private load(key: K, load: () => Promise<V | null>): Promise<V | null> {
    const running = this.inflight.get(key);
    if (running) return running;
    const epoch = this.epoch;
    const startedAt = this.now();
    // A loader that throws instead of rejecting fails its read, not the request holding a cached value.
    const promise = new Promise<V | null>((resolve) => resolve(load())).then((value) => {
      if (this.epoch === epoch) {
        if (value === null) this.entries.delete(key);
        else {
          if (this.entries.size >= (this.opts.maxEntries ?? 10_000)) this.entries.clear();
          this.entries.set(key, { value, loadedAt: startedAt });
        }
      }
      return value;
    }).finally(() => {
      if (this.inflight.get(key) === promise) this.inflight.delete(key);
    });
    this.inflight.set(key, promise);
    return promise;
  }

  forget(key: K): void {
    this.forgetWhere((k) => k === key);
  }

  /** Drops every entry whose key or value matches, and every load running now. */
  forgetWhere(match: (key: K, value: V | undefined) => boolean): void {
    this.epoch++;
    for (const [k, e] of this.entries) if (match(k, e.value)) this.entries.delete(k);
    this.inflight.clear();
  }
}
