import { EventEmitter } from 'node:events';
import type { Redis } from 'ioredis';
import { JobUpdateBus, jobIdOf } from './job-updates';

/** A stand-in for the subscriber connection: only what the bus uses (message events, subscribe). */
function fakeSubscriber() {
  const ee = new EventEmitter() as EventEmitter & { subscribe: () => Promise<number> };
  ee.subscribe = async () => 1;
  return ee;
}

const A = '6f1c2a4e-1b2c-4d3e-8f90-0123456789ab';
const B = '7a2d3b5f-2c3d-4e4f-9a01-123456789abc';

describe('JobUpdateBus', () => {
  it('reads the job id of every published shape without parsing, and nothing else', () => {
    expect(jobIdOf(JSON.stringify({ jobId: A, tenantId: B, status: 'SUCCEEDED', progress: 1, row: { id: A } }))).toBe(A);
    expect(jobIdOf(JSON.stringify({ jobId: A, status: 'QUEUED' }))).toBe(A);
    expect(jobIdOf(JSON.stringify({ status: 'QUEUED', jobId: A }))).toBeNull();
    expect(jobIdOf(JSON.stringify({ jobId: 'short', status: 'QUEUED' }))).toBeNull();
  });

  it('delivers to the listeners of a job only, skips jobs nobody here waits for, and parses other shapes in full', async () => {
    const sub = fakeSubscriber();
    const bus = new JobUpdateBus(sub as unknown as Redis, 'updates');
    await bus.start();
    const got: string[] = [];
    const off = bus.on(A, (u) => got.push(`${u.jobId}:${u.status}`));
    const parse = jest.spyOn(JSON, 'parse');
    try {
      sub.emit('message', 'updates', JSON.stringify({ jobId: B, status: 'RUNNING' }));
      expect(parse).not.toHaveBeenCalled(); // no listener for B: skipped unparsed
      sub.emit('message', 'updates', JSON.stringify({ jobId: A, status: 'RUNNING' }));
      sub.emit('message', 'updates', JSON.stringify({ status: 'SUCCEEDED', jobId: A })); // another key order still arrives
      expect(got).toEqual([`${A}:RUNNING`, `${A}:SUCCEEDED`]);
    } finally {
      parse.mockRestore();
      off();
    }
  });

  it('removing a listener twice does not drop listeners registered after it', async () => {
    const sub = fakeSubscriber();
    const bus = new JobUpdateBus(sub as unknown as Redis, 'updates');
    await bus.start();
    const off = bus.on(A, () => undefined);
    off();
    const got: string[] = [];
    bus.on(A, (u) => got.push(u.status));
    off();
    sub.emit('message', 'updates', JSON.stringify({ jobId: A, status: 'SUCCEEDED' }));
    expect(got).toEqual(['SUCCEEDED']);
  });

  it('updates handed over by a control plane in this process arrive once; other processes get the tagged copy from Redis', async () => {
    const here = fakeSubscriber();
    const elsewhere = fakeSubscriber();
    const local = new JobUpdateBus(here as unknown as Redis, 'updates');
    const remote = new JobUpdateBus(elsewhere as unknown as Redis, 'updates');
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
    here.emit('message', 'updates', published);
    elsewhere.emit('message', 'updates', published);
    expect(gotHere).toEqual(['SUCCEEDED']);
    expect(gotThere).toEqual(['SUCCEEDED']);
    // Another control plane's (or an untagged) update still reaches the local bus.
    here.emit('message', 'updates', remote.tagged(JSON.stringify({ jobId: A, status: 'CANCELED' })));
    expect(gotHere).toEqual(['SUCCEEDED', 'CANCELED']);
  });
});
