import { EventEmitter } from 'node:events';
import type { Redis } from 'ioredis';
import { JobUpdateBus, jobIdOf } from './job-updates';

/**
 * A stand-in for the subscriber connection: only what the bus uses (message events, subscribe,
 * unsubscribe). `publish` delivers to subscribed channels only, as Redis does; `hold` keeps
 * SUBSCRIBE replies back until `confirm()`.
 */
function fakeSubscriber() {
  const channels = new Set<string>();
  const calls: string[] = [];
  let held: Array<() => void> | null = null;
  const ee = Object.assign(new EventEmitter(), {
    channels,
    calls,
    async subscribe(ch: string) {
      calls.push(`+${ch}`);
      if (held) await new Promise<void>((r) => held!.push(r));
      channels.add(ch);
      return channels.size;
    },
    async unsubscribe(ch: string) {
      calls.push(`-${ch}`);
      channels.delete(ch);
      return channels.size;
    },
    publish(ch: string, raw: string) {
      if (channels.has(ch)) ee.emit('message', ch, raw);
    },
    hold() {
      held = [];
    },
    confirm() {
      const waiting = held ?? [];
      held = null;
      for (const r of waiting) r();
    },
  });
  return ee;
}

const channelOf = (id: string) => `updates:${id}`;

const A = '6f1c2a4e-1b2c-4d3e-8f90-0123456789ab';
const B = '7a2d3b5f-2c3d-4e4f-9a01-123456789abc';

describe('JobUpdateBus', () => {
  it('reads the job id of every published shape without parsing, and nothing else', () => {
    expect(jobIdOf(JSON.stringify({ jobId: A, tenantId: B, status: 'SUCCEEDED', progress: 1, row: { id: A } }))).toBe(A);
    expect(jobIdOf(JSON.stringify({ jobId: A, status: 'QUEUED' }))).toBe(A);
    expect(jobIdOf(JSON.stringify({ status: 'QUEUED', jobId: A }))).toBeNull();
    expect(jobIdOf(JSON.stringify({ jobId: 'short', status: 'QUEUED' }))).toBeNull();
  });

  it('delivers to the listeners of a job only, skips (unparsed) jobs nobody here waits for, and parses other shapes in full', async () => {
    const sub = fakeSubscriber();
    const bus = new JobUpdateBus(sub as unknown as Redis, channelOf);
    await bus.start();
    const got: string[] = [];
    const off = bus.on(A, (u) => got.push(`${u.jobId}:${u.status}`));
    const parse = jest.spyOn(JSON, 'parse');
    try {
      sub.emit('message', channelOf(B), JSON.stringify({ jobId: B, status: 'RUNNING' })); // e.g. after its UNSUBSCRIBE was sent
      expect(parse).not.toHaveBeenCalled(); // no listener for B: skipped unparsed
      sub.publish(channelOf(A), JSON.stringify({ jobId: A, status: 'RUNNING' }));
      sub.publish(channelOf(A), JSON.stringify({ status: 'SUCCEEDED', jobId: A })); // another key order still arrives
      expect(got).toEqual([`${A}:RUNNING`, `${A}:SUCCEEDED`]);
    } finally {
      parse.mockRestore();
      off();
    }
  });

  it('removing a listener twice does not drop listeners registered after it', async () => {
    const sub = fakeSubscriber();
    const bus = new JobUpdateBus(sub as unknown as Redis, channelOf);
    await bus.start();
    const off = bus.on(A, () => undefined);
    off();
    const got: string[] = [];
    bus.on(A, (u) => got.push(u.status));
    off();
    sub.publish(channelOf(A), JSON.stringify({ jobId: A, status: 'SUCCEEDED' }));
    expect(got).toEqual(['SUCCEEDED']);
  });

  it('updates handed over by a control plane in this process arrive once; other processes get the tagged copy from Redis', async () => {
    const here = fakeSubscriber();
    const elsewhere = fakeSubscriber();
    const local = new JobUpdateBus(here as unknown as Redis, channelOf);
    const remote = new JobUpdateBus(elsewhere as unknown as Redis, channelOf);
    await local.start();
    await remote.start();
    const gotHere: string[] = [];
    const gotThere: string[] = [];
    local.on(A, (u) => gotHere.push(u.status));
    remote.on(A, (u) => gotThere.push(u.status));
    const message = JSON.stringify({ jobId: A, tenantId: B, status: 'SUCCEEDED', progress: 1, row: { id: A } });
    const published = local.tagged(message);
    expect(jobIdOf(published)).toBe(A);
    expect(JSON.parse(published)).toEqual({ ...JSON.parse(message), o: local.origin });
    local.deliverLocal(message);
    expect(gotHere).toEqual(['SUCCEEDED']);
    // Redis brings the published copy to every subscriber: the local bus skips its own.
    here.publish(channelOf(A), published);
    elsewhere.publish(channelOf(A), published);
    expect(gotHere).toEqual(['SUCCEEDED']);
    expect(gotThere).toEqual(['SUCCEEDED']);
    // Another control plane's (or an untagged) update still reaches the local bus.
    here.publish(channelOf(A), remote.tagged(JSON.stringify({ jobId: A, status: 'CANCELED' })));
    expect(gotHere).toEqual(['SUCCEEDED', 'CANCELED']);
  });

  it('subscribes to a job\'s channel with its first listener and leaves it with its last', async () => {
    const sub = fakeSubscriber();
    const bus = new JobUpdateBus(sub as unknown as Redis, channelOf);
    await bus.start();
    const offWait = bus.on(A, () => undefined);
    const stream = bus.stream(A, undefined, 1000);
    await new Promise((r) => setImmediate(r));
    expect(sub.calls).toEqual([`+${channelOf(A)}`]);
    expect(bus.subscribedJobs).toBe(1);
    offWait();
    expect(sub.calls).toEqual([`+${channelOf(A)}`]); // the stream still listens
    stream.cancel();
    expect(sub.calls).toEqual([`+${channelOf(A)}`, `-${channelOf(A)}`]);
    expect(bus.subscribedJobs).toBe(0);
    // Another job elsewhere: this process was never subscribed to it, so Redis brings nothing.
    const got: string[] = [];
    const offB = bus.on(B, (u) => got.push(u.status));
    await new Promise((r) => setImmediate(r));
    sub.publish(channelOf(A), JSON.stringify({ jobId: A, status: 'SUCCEEDED' }));
    sub.publish(channelOf(B), JSON.stringify({ jobId: B, status: 'RUNNING' }));
    expect(got).toEqual(['RUNNING']);
    offB();
  });

  it('a subscription Redis confirms late ends the wait early, so the caller reads the job; one confirmed in time does not', async () => {
    const sub = fakeSubscriber();
    const bus = new JobUpdateBus(sub as unknown as Redis, channelOf);
    await bus.start();
    sub.hold();
    const late = bus.waiter(A, () => true);
    late.recheckUnlessSubscribed(); // not confirmed yet: an end published now would be missed
    const t0 = Date.now();
    const next = late.next(5_000);
    setTimeout(() => sub.confirm(), 20);
    expect(await next).toBeNull();
    expect(Date.now() - t0).toBeLessThan(2_000);
    // Once confirmed, updates arrive and no further wait is cut short.
    sub.publish(channelOf(A), JSON.stringify({ jobId: A, status: 'SUCCEEDED' }));
    expect((await late.next(50))?.status).toBe('SUCCEEDED');
    expect(await late.next(50)).toBeNull();
    late.cancel();

    const early = bus.waiter(B, () => true);
    await new Promise((r) => setImmediate(r)); // confirmed
    early.recheckUnlessSubscribed();
    const t1 = Date.now();
    expect(await early.next(150)).toBeNull();
    expect(Date.now() - t1).toBeGreaterThanOrEqual(140); // ran its whole wait: nothing to read again
    early.cancel();
  });

  it('an interrupt between waits ends the next wait (a stream aborted or poked while its reader was busy)', async () => {
    const sub = fakeSubscriber();
    const bus = new JobUpdateBus(sub as unknown as Redis, channelOf);
    await bus.start();
    sub.hold();
    const stream = bus.stream(A, undefined, 5_000);
    stream.recheckUnlessSubscribed();
    sub.confirm(); // confirmed before the reader's first next(): the poke waits for it
    await new Promise((r) => setImmediate(r));
    const t0 = Date.now();
    const first = await stream.next();
    expect(first.value).toBeNull(); // "look for yourself"
    expect(Date.now() - t0).toBeLessThan(1_000);
    stream.cancel();
  });
});
