import { RefreshingCache } from './cache';

/** A load the test settles by hand, counting calls. */
function manualLoads<V>() {
  const pending: Array<{ resolve: (v: V | null) => void; reject: (e: Error) => void }> = [];
  const load = () => new Promise<V | null>((resolve, reject) => pending.push({ resolve, reject }));
  return { load, pending };
}
const flush = () => new Promise((r) => setImmediate(r));

describe('RefreshingCache', () => {
  let now = 0;
  const cache = () => new RefreshingCache<string, string>({ ttlMs: 1000, now: () => now });
  beforeEach(() => (now = 10_000));

  it('serves an entry within its TTL without loading again, and loads again once it has expired', async () => {
    const c = cache();
    let loads = 0;
    const load = async () => `v${++loads}`;
    expect(await c.get('k', load)).toBe('v1');
    now += 400;
    expect(await c.get('k', load)).toBe('v1');
    expect(loads).toBe(1);
    now += 700; // 1100 ms after the read began: expired, so the request waits for a fresh read
    expect(await c.get('k', load)).toBe('v2');
  });

  it('past half its life, answers with the entry at once and refreshes it in the background', async () => {
    const c = cache();
    const { load, pending } = manualLoads<string>();
    const first = c.get('k', load);
    pending[0].resolve('old');
    expect(await first).toBe('old');
    now += 600;
    expect(await c.get('k', load)).toBe('old'); // not blocked on the refresh it started
    expect(pending).toHaveLength(2);
    expect(await c.get('k', load)).toBe('old'); // one refresh at a time
    expect(pending).toHaveLength(2);
    pending[1].resolve('new');
    await flush();
    expect(await c.get('k', load)).toBe('new');
    // The refreshed entry's age counts from when its read began (600): fresh until 1600.
    now += 999;
    expect(await c.get('k', async () => 'newer')).toBe('new');
    now += 1;
    expect(await c.get('k', async () => 'newer')).toBe('newer');
  });

  it('shares one load between concurrent misses', async () => {
    const c = cache();
    const { load, pending } = manualLoads<string>();
    const a = c.get('k', load);
    const b = c.get('k', load);
    expect(pending).toHaveLength(1);
    pending[0].resolve('v');
    expect(await Promise.all([a, b])).toEqual(['v', 'v']);
  });

  it('does not cache null, and a null refresh removes the entry (a revoked key is refused at once)', async () => {
    const c = cache();
    let answer: string | null = null;
    expect(await c.get('k', async () => answer)).toBeNull();
    answer = 'v';
    expect(await c.get('k', async () => answer)).toBe('v');
    now += 600;
    answer = null;
    expect(await c.get('k', async () => answer)).toBe('v'); // starts the refresh, which finds nothing
    await flush();
    let loads = 0;
    expect(await c.get('k', async () => (loads++, null))).toBeNull();
    expect(loads).toBe(1);
  });

  it('forget drops the entry and discards a load already running, so an older read never comes back', async () => {
    const c = cache();
    const { load, pending } = manualLoads<string>();
    const before = c.get('k', load);
    c.forget('k');
    const after = c.get('k', load); // begun after the change: a new read, not the one in flight
    expect(pending).toHaveLength(2);
    pending[1].resolve('after');
    pending[0].resolve('before');
    expect(await before).toBe('before'); // its own caller still gets an answer
    expect(await after).toBe('after');
    expect(await c.get('k', async () => 'unused')).toBe('after');
  });

  it('forgetWhere matches on values', async () => {
    const c = cache();
    await c.get('a', async () => 'key-1');
    await c.get('b', async () => 'key-2');
    c.forgetWhere((_, v) => v === 'key-1');
    expect(await c.get('a', async () => 'reloaded')).toBe('reloaded');
    expect(await c.get('b', async () => 'reloaded')).toBe('key-2');
  });

  it('a loader that throws rather than rejects is a failed read like any other', async () => {
    const c = cache();
    await c.get('k', async () => 'v');
    now += 600;
    const throwing = (): Promise<string> => {
      throw new Error('sync');
    };
    expect(await c.get('k', throwing)).toBe('v');
    now += 500;
    await expect(c.get('k', throwing)).rejects.toThrow('sync');
  });

  it('a failed background refresh keeps the entry until it expires; a failed blocking load fails the caller', async () => {
    const c = cache();
    await c.get('k', async () => 'v');
    now += 600;
    expect(await c.get('k', async () => Promise.reject(new Error('db down')))).toBe('v');
    await flush();
    now += 300;
    expect(await c.get('k', async () => Promise.reject(new Error('db down')))).toBe('v');
    await flush();
    now += 200;
    await expect(c.get('k', async () => Promise.reject(new Error('db down')))).rejects.toThrow('db down');
  });
});
