import type { ArtifactStore } from '../../training/artifact-store';
import type { Announcer } from './announcer';
import type { ControlPlaneContext } from './context';
import type { NodeMonitor } from './node-monitor';
import { Reconciler } from './reconciler';
import type { Scheduler } from './scheduler';

/**
 * Retention's deletion of stored input images, against a fake database and store: what the
 * retention statement returns is deleted; a slow or failing store never holds up a tick; a failed
 * deletion is retried on a later tick once the retry delay has passed.
 */

const ref = (n: number) => `inputs/00000000-0000-4000-8000-00000000000${n}/00000000-0000-4000-8000-0000000000a${n}`;

function setup(expired: Array<Array<string | null>>) {
  const warnings: unknown[] = [];
  const queue = [...expired];
  const cx = {
    db: {
      query: async (sql: string) => {
        if (sql.includes('SET input = NULL')) {
          const refs = queue.shift() ?? [];
          return [refs.map((r) => ({ ref: r })), refs.length];
        }
        if (sql.trimStart().startsWith('UPDATE')) return [[], 0];
        if (sql.includes(' AS lo')) return [{ lo: new Date(), hi: new Date() }]; // the webhook sweep's window
        return [];
      },
    },
    log: { warn: (...args: unknown[]) => warnings.push(args) },
    metrics: { nodeDevices: { reset: () => undefined, set: () => undefined } },
    settings: { reconcileIntervalMs: 1000, redispatchAfterMs: 5000, orphanAfterMs: 5000 },
  } as unknown as ControlPlaneContext;
  const monitor = { knownNodes: () => [], nodeInfo: () => null } as unknown as NodeMonitor;
  const deleted: string[] = [];
  const failing = new Set<string>();
  const hanging = new Map<string, () => void>();
  const store = {
    delete: async (key: string) => {
      if (failing.has(key)) throw new Error(`store down for ${key}`);
      // A key marked hanging waits until the test calls the resolver stored in its place.
      if (hanging.has(key)) await new Promise<void>((r) => hanging.set(key, r));
      deleted.push(key);
    },
  } as unknown as ArtifactStore;
  const r = new Reconciler(cx, { refreshQuotas: () => 0 } as unknown as Scheduler, monitor, {} as Announcer, store);
  return { r, deleted, failing, hanging, warnings };
}

afterEach(() => jest.restoreAllMocks());

it('deletes the images of the inputs the retention statement cleared, skipping inputs without one', async () => {
  const { r, deleted } = setup([[ref(1), null, ref(2)], [ref(3)]]);
  await r.tick();
  await r.drainExpiredInputs();
  expect(deleted.sort()).toEqual([ref(1), ref(2)]);
  await r.tick();
  await r.drainExpiredInputs();
  expect(deleted.sort()).toEqual([ref(1), ref(2), ref(3)]);
});

it('does not hold up the tick while the store is slow', async () => {
  const { r, deleted, hanging } = setup([[ref(1)], [ref(2)]]);
  hanging.set(ref(1), () => undefined);
  await r.tick(); // returns although ref(1)'s delete has not finished
  expect(deleted).toEqual([]);
  await r.tick(); // a later tick still runs, and queues ref(2) behind the running deletions
  hanging.get(ref(1))!();
  await r.drainExpiredInputs();
  expect(deleted.sort()).toEqual([ref(1), ref(2)]);
});

it('logs a failed deletion and retries it on a later tick once the retry delay has passed', async () => {
  const { r, deleted, failing, warnings } = setup([[ref(1), ref(2)]]);
  let now = 1_000_000;
  jest.spyOn(Date, 'now').mockImplementation(() => now);
  failing.add(ref(2));
  await r.tick();
  await r.drainExpiredInputs();
  expect(deleted).toEqual([ref(1)]);
  expect(warnings).toHaveLength(1);
  expect(JSON.stringify(warnings[0])).toMatch(/"failed":1/);

  failing.delete(ref(2));
  now += 1_000;
  await r.tick(); // too soon: not retried yet
  await r.drainExpiredInputs();
  expect(deleted).toEqual([ref(1)]);

  now += 60_000;
  await r.tick();
  await r.drainExpiredInputs();
  expect(deleted).toEqual([ref(1), ref(2)]);
  expect(warnings).toHaveLength(1);
});
