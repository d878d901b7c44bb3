import {
  Admitter,
  decide,
  type ActiveJob,
  type AdmissionSnapshot,
  type Hardware,
  type NodeSpec,
  type PendingJob,
  type QuotaSpec,
} from './admission';

const gpuNode = (id: string, totalDevices = 8): NodeSpec => ({ id, hardware: 'GPU', totalDevices });
const cpuNode = (id: string, totalDevices: number): NodeSpec => ({ id, hardware: 'CPU', totalDevices });
const quota = (tenantId: string, guaranteed: number, limit: number, hardware: Hardware = 'GPU'): QuotaSpec => ({
  tenantId,
  hardware,
  guaranteed,
  limit,
});
const job = (id: string, tenantId: string, devices = 1, enqueuedAt = 0, hardware: Hardware = 'GPU'): PendingJob => ({
  id,
  tenantId,
  hardware,
  devices,
  enqueuedAt,
});
const running = (id: string, tenantId: string, nodeId: string, devices: number, admittedAt: number, borrowed: boolean, hardware: Hardware = 'GPU'): ActiveJob => ({
  ...job(id, tenantId, devices, admittedAt - 10, hardware),
  nodeId,
  admittedAt,
  borrowed,
});

function snapshot(over: Partial<AdmissionSnapshot>): AdmissionSnapshot {
  return {
    now: 1000,
    nodes: [],
    quotas: [],
    defaultQuota: { CPU: { guaranteed: 0, limit: 0 }, GPU: { guaranteed: 0, limit: 0 } },
    active: [],
    pending: [],
    ...over,
  };
}

describe('decide', () => {
  it('admits a job within its tenant guarantee, not borrowed', () => {
    const d = decide(snapshot({ nodes: [gpuNode('n1')], quotas: [quota('A', 4, 8)], pending: [job('j1', 'A', 2)] }));
    expect(d).toEqual({ admit: [{ jobId: 'j1', nodeId: 'n1', borrowed: false }], preempt: [] });
  });

  it('borrows idle capacity up to the limit and marks those jobs borrowed', () => {
    const d = decide(
      snapshot({
        nodes: [gpuNode('n1')],
        quotas: [quota('A', 2, 4), quota('B', 4, 4)],
        pending: [job('a1', 'A', 2, 1), job('a2', 'A', 2, 2)],
      }),
    );
    expect(d.admit).toEqual([
      { jobId: 'a1', nodeId: 'n1', borrowed: false },
      { jobId: 'a2', nodeId: 'n1', borrowed: true },
    ]);
  });

  it('never admits beyond the limit, even with idle capacity', () => {
    const d = decide(
      snapshot({
        nodes: [gpuNode('n1')],
        quotas: [quota('A', 1, 3)],
        active: [running('r1', 'A', 'n1', 2, 500, true)],
        pending: [job('a1', 'A', 2, 1), job('a2', 'A', 1, 2)],
      }),
    );
    // a1 would reach 4 > 3; a2 reaches exactly 3.
    expect(d.admit).toEqual([{ jobId: 'a2', nodeId: 'n1', borrowed: true }]);
  });

  it('uses the default quota for tenants without a quota row', () => {
    const d = decide(
      snapshot({
        nodes: [gpuNode('n1')],
        defaultQuota: { CPU: { guaranteed: 0, limit: 0 }, GPU: { guaranteed: 1, limit: 1 } },
        pending: [job('a1', 'A', 1, 1), job('a2', 'A', 1, 2)],
      }),
    );
    expect(d.admit).toEqual([{ jobId: 'a1', nodeId: 'n1', borrowed: false }]);
  });

  it('places best-fit: the node with the fewest free devices that still fits, ties by node id', () => {
    const nodes = [gpuNode('n1'), gpuNode('n2'), gpuNode('n3'), gpuNode('n4')];
    const active = [
      running('r1', 'B', 'n1', 4, 1, false), // n1: 4 free
      running('r2', 'B', 'n2', 6, 1, false), // n2: 2 free
      running('r3', 'B', 'n3', 7, 1, false), // n3: 1 free
      running('r4', 'B', 'n4', 6, 1, false), // n4: 2 free
    ];
    const d = decide(snapshot({ nodes, quotas: [quota('A', 8, 8), quota('B', 23, 23)], active, pending: [job('a1', 'A', 2)] }));
    expect(d.admit).toEqual([{ jobId: 'a1', nodeId: 'n2', borrowed: false }]);
  });

  it('needs all devices of a job on one node', () => {
    const d = decide(
      snapshot({
        nodes: [cpuNode('c1', 1), cpuNode('c2', 1)],
        quotas: [quota('A', 4, 4, 'CPU')],
        pending: [job('a1', 'A', 2, 0, 'CPU')],
      }),
    );
    expect(d).toEqual({ admit: [], preempt: [] });
  });

  it('does not let a job that cannot fit block other jobs', () => {
    const d = decide(
      snapshot({
        nodes: [gpuNode('n1', 4)],
        quotas: [quota('A', 8, 8), quota('B', 8, 8)],
        pending: [job('a8', 'A', 8, 0), job('a1', 'A', 1, 5), job('b1', 'B', 1, 3)],
      }),
    );
    expect(d.admit.map((a) => a.jobId)).toEqual(['b1', 'a1']);
  });

  it('serves the tenant with the lowest used/guaranteed first', () => {
    // One free device: B at 0/1 goes before A at 1/4, although A's job is older.
    const d = decide(
      snapshot({
        nodes: [gpuNode('n1', 2)],
        quotas: [quota('A', 4, 4), quota('B', 1, 1)],
        active: [running('ra', 'A', 'n1', 1, 1, false)],
        pending: [job('a1', 'A', 1, 1), job('b1', 'B', 1, 50)],
      }),
    );
    expect(d.admit).toEqual([{ jobId: 'b1', nodeId: 'n1', borrowed: false }]);
  });

  it('recomputes shares after each admission', () => {
    // A and B both at 1/2; A's older job goes first, which lifts A to 1 so B's job is next.
    const d = decide(
      snapshot({
        nodes: [gpuNode('n1', 6)],
        quotas: [quota('A', 2, 2), quota('B', 2, 2)],
        active: [running('ra', 'A', 'n1', 1, 1, false), running('rb', 'B', 'n1', 1, 1, false)],
        pending: [job('a1', 'A', 1, 1), job('a2', 'A', 1, 2), job('b1', 'B', 1, 3)],
      }),
    );
    expect(d.admit.map((a) => a.jobId)).toEqual(['a1', 'b1']);
  });

  it('breaks fair-share ties by job age, then job id', () => {
    const base = { nodes: [gpuNode('n1', 1)], quotas: [quota('A', 2, 2), quota('B', 2, 2)] };
    const older = decide(snapshot({ ...base, pending: [job('a1', 'A', 1, 20), job('b1', 'B', 1, 10)] }));
    expect(older.admit).toEqual([{ jobId: 'b1', nodeId: 'n1', borrowed: false }]);
    const sameAge = decide(snapshot({ ...base, pending: [job('b1', 'B', 1, 10), job('a1', 'A', 1, 10)] }));
    expect(sameAge.admit).toEqual([{ jobId: 'a1', nodeId: 'n1', borrowed: false }]);
  });

  it('orders a tenant’s own jobs by priority, then age', () => {
    const d = decide(
      snapshot({
        nodes: [gpuNode('n1', 1)],
        quotas: [quota('A', 1, 1)],
        pending: [job('old', 'A', 1, 1), { ...job('urgent', 'A', 1, 9), priority: 5 }],
      }),
    );
    expect(d.admit).toEqual([{ jobId: 'urgent', nodeId: 'n1', borrowed: false }]);
  });

  it('serves jobs within guarantee before borrowing jobs, whatever the shares', () => {
    // A (share 0) would need to borrow for its 8-device job; B (share 2/4) is within guarantee.
    const d = decide(
      snapshot({
        nodes: [gpuNode('n0', 2), gpuNode('n1', 8)],
        quotas: [quota('A', 4, 8), quota('B', 4, 4)],
        active: [running('rb', 'B', 'n0', 2, 1, false)],
        pending: [job('a8', 'A', 8, 1), job('b1', 'B', 1, 2)],
      }),
    );
    expect(d.admit).toEqual([{ jobId: 'b1', nodeId: 'n1', borrowed: false }]);
  });

  it('a tenant with no guarantee borrows only after tenants that have one', () => {
    const d = decide(
      snapshot({
        nodes: [gpuNode('n1', 1)],
        quotas: [quota('Z', 0, 4), quota('A', 1, 4)],
        active: [],
        pending: [job('z1', 'Z', 1, 1), job('a1', 'A', 1, 1), job('a2', 'A', 1, 2)],
      }),
    );
    expect(d.admit).toEqual([{ jobId: 'a1', nodeId: 'n1', borrowed: false }]);
    const borrowing = decide(
      snapshot({
        nodes: [gpuNode('n1', 2)],
        quotas: [quota('Z', 0, 4), quota('A', 1, 4)],
        active: [running('ra', 'A', 'n1', 1, 1, false)],
        pending: [job('z1', 'Z', 1, 1), job('a2', 'A', 1, 2)],
      }),
    );
    expect(borrowing.admit).toEqual([{ jobId: 'a2', nodeId: 'n1', borrowed: true }]);
  });

  describe('preemption', () => {
    it('reclaims the youngest borrowed job of another tenant for a tenant within guarantee (two 1-device nodes)', () => {
      const d = decide(
        snapshot({
          nodes: [cpuNode('c1', 1), cpuNode('c2', 1)],
          quotas: [quota('A', 1, 2, 'CPU'), quota('B', 1, 2, 'CPU')],
          active: [running('a-old', 'A', 'c1', 1, 100, false, 'CPU'), running('a-young', 'A', 'c2', 1, 200, true, 'CPU')],
          pending: [job('b1', 'B', 1, 300, 'CPU')],
        }),
      );
      expect(d.preempt).toEqual([{
        jobId: 'a-young', nodeId: 'c2', reason: expect.stringContaining('B'), forJobId: 'b1',
        victim: expect.objectContaining({ id: 'a-young', nodeId: 'c2', borrowed: true }),
      }]);
      expect(d.admit).toEqual([{ jobId: 'b1', nodeId: 'c2', borrowed: false }]);
    });

    it('reclaims on a single 2-device node', () => {
      const d = decide(
        snapshot({
          nodes: [cpuNode('c1', 2)],
          quotas: [quota('A', 1, 2, 'CPU'), quota('B', 1, 2, 'CPU')],
          active: [running('a1', 'A', 'c1', 1, 100, false, 'CPU'), running('a2', 'A', 'c1', 1, 200, true, 'CPU')],
          pending: [job('b1', 'B', 1, 300, 'CPU')],
        }),
      );
      expect(d.preempt.map((p) => p.jobId)).toEqual(['a2']);
      expect(d.admit).toEqual([{ jobId: 'b1', nodeId: 'c1', borrowed: false }]);
    });

    it('evicts the youngest borrowed job on a node first', () => {
      const d = decide(
        snapshot({
          nodes: [gpuNode('n1', 3)],
          quotas: [quota('A', 1, 3), quota('B', 1, 1)],
          active: [running('a0', 'A', 'n1', 1, 5, false), running('a-old', 'A', 'n1', 1, 10, true), running('a-young', 'A', 'n1', 1, 20, true)],
          pending: [job('b1', 'B', 1, 30)],
        }),
      );
      expect(d.preempt.map((p) => p.jobId)).toEqual(['a-young']);
      expect(d.admit).toEqual([{ jobId: 'b1', nodeId: 'n1', borrowed: false }]);
    });

    it('picks the node needing the fewest preemptions, youngest victims first', () => {
      const d = decide(
        snapshot({
          nodes: [gpuNode('n1', 2), gpuNode('n2', 2)],
          quotas: [quota('A', 0, 4), quota('B', 2, 2)],
          active: [
            running('a1', 'A', 'n1', 1, 10, true),
            running('a2', 'A', 'n1', 1, 20, true),
            running('a3', 'A', 'n2', 2, 15, true),
          ],
          pending: [job('b1', 'B', 2, 30)],
        }),
      );
      expect(d.preempt.map((p) => [p.jobId, p.nodeId])).toEqual([['a3', 'n2']]);
      expect(d.admit).toEqual([{ jobId: 'b1', nodeId: 'n2', borrowed: false }]);
    });

    it('prefers the younger victim when preemption counts tie', () => {
      const d = decide(
        snapshot({
          nodes: [gpuNode('n1', 1), gpuNode('n2', 1)],
          quotas: [quota('A', 0, 4), quota('B', 1, 1)],
          active: [running('older', 'A', 'n1', 1, 10, true), running('younger', 'A', 'n2', 1, 20, true)],
          pending: [job('b1', 'B', 1, 30)],
        }),
      );
      expect(d.preempt.map((p) => p.jobId)).toEqual(['younger']);
      expect(d.admit).toEqual([{ jobId: 'b1', nodeId: 'n2', borrowed: false }]);
    });

    it('never preempts jobs that are not borrowed', () => {
      const d = decide(
        snapshot({
          nodes: [cpuNode('c1', 2)],
          quotas: [quota('A', 2, 4, 'CPU'), quota('B', 1, 2, 'CPU')],
          active: [running('a1', 'A', 'c1', 1, 100, false, 'CPU'), running('a2', 'A', 'c1', 1, 200, false, 'CPU')],
          pending: [job('b1', 'B', 1, 300, 'CPU')],
        }),
      );
      expect(d).toEqual({ admit: [], preempt: [] });
    });

    it('does not preempt for a tenant that would exceed its guarantee', () => {
      const d = decide(
        snapshot({
          nodes: [cpuNode('c1', 2)],
          quotas: [quota('A', 1, 2, 'CPU'), quota('B', 0, 2, 'CPU')],
          active: [running('a1', 'A', 'c1', 1, 100, false, 'CPU'), running('a2', 'A', 'c1', 1, 200, true, 'CPU')],
          pending: [job('b1', 'B', 1, 300, 'CPU')],
        }),
      );
      expect(d).toEqual({ admit: [], preempt: [] });
    });

    it('does not preempt when no single node can be freed enough', () => {
      const d = decide(
        snapshot({
          nodes: [cpuNode('c1', 1), cpuNode('c2', 1)],
          quotas: [quota('A', 0, 2, 'CPU'), quota('B', 2, 2, 'CPU')],
          active: [running('a1', 'A', 'c1', 1, 100, true, 'CPU'), running('a2', 'A', 'c2', 1, 200, true, 'CPU')],
          pending: [job('b1', 'B', 2, 300, 'CPU')],
        }),
      );
      expect(d).toEqual({ admit: [], preempt: [] });
    });

    it('does not reclaim from a tenant that is no longer above its guarantee', () => {
      // a2 was admitted as borrowed, but A's other job has ended: A holds only its guarantee now.
      const d = decide(
        snapshot({
          nodes: [cpuNode('c1', 1)],
          quotas: [quota('A', 1, 2, 'CPU'), quota('B', 1, 2, 'CPU')],
          active: [running('a2', 'A', 'c1', 1, 200, true, 'CPU')],
          pending: [job('b1', 'B', 1, 300, 'CPU')],
        }),
      );
      expect(d).toEqual({ admit: [], preempt: [] });
    });

    it('never preempts the requesting tenant’s own borrowed jobs', () => {
      const d = decide(
        snapshot({
          nodes: [cpuNode('c1', 1)],
          quotas: [quota('A', 2, 2, 'CPU')],
          active: [running('a1', 'A', 'c1', 1, 200, true, 'CPU')],
          pending: [job('a2', 'A', 1, 300, 'CPU')],
        }),
      );
      expect(d).toEqual({ admit: [], preempt: [] });
    });

    it('evicts only the victims needed: a younger job is spared once an older victim alone frees enough', () => {
      // One 4-GPU node full with B's borrowed b-old (3 GPUs) and b-young (1 GPU). Youngest first
      // takes b-young, then b-old; b-old alone frees the 3 GPUs a1 needs, so b-young is dropped.
      const d = decide(
        snapshot({
          nodes: [gpuNode('n1', 4)],
          quotas: [quota('A', 4, 4), quota('B', 0, 4)],
          active: [running('b-old', 'B', 'n1', 3, 10, true), running('b-young', 'B', 'n1', 1, 20, true)],
          pending: [job('a1', 'A', 3, 30)],
        }),
      );
      expect(d.admit).toEqual([{ jobId: 'a1', nodeId: 'n1', borrowed: false }]);
      expect(d.preempt.map((p) => p.jobId)).toEqual(['b-old']);
    });

    it('rates a node by the victims it needs, not by those the greedy pass picked, and evicts only those', () => {
      // n1: b-young (1) + b-old (3): one eviction (b-old) frees 3. n2: three 1-GPU jobs, all needed.
      const d = decide(
        snapshot({
          nodes: [gpuNode('n1', 4), gpuNode('n2', 3)],
          quotas: [quota('A', 4, 4), quota('B', 0, 8)],
          active: [
            running('b-old', 'B', 'n1', 3, 10, true),
            running('b-young', 'B', 'n1', 1, 50, true),
            running('c1', 'B', 'n2', 1, 40, true),
            running('c2', 'B', 'n2', 1, 41, true),
            running('c3', 'B', 'n2', 1, 42, true),
          ],
          pending: [job('a1', 'A', 3, 60)],
        }),
      );
      expect(d.preempt.map((p) => [p.jobId, p.nodeId])).toEqual([['b-old', 'n1']]);
      expect(d.admit).toEqual([{ jobId: 'a1', nodeId: 'n1', borrowed: false }]);
    });

    it('prefers a node needing one eviction over one needing two cheaper ones, counting only needed victims', () => {
      // n1: b-young (1) + b-old (3), of which only b-old is needed. n2: c2 (2) + c1 (1), both needed,
      // and young (little lost work). Counting b-young too would tie 2-2 and pick n2 for its lost work.
      const d = decide(
        snapshot({
          nodes: [gpuNode('n1', 4), gpuNode('n2', 3)],
          quotas: [quota('A', 4, 4), quota('B', 0, 8)],
          active: [
            running('b-old', 'B', 'n1', 3, 10, true),
            running('b-young', 'B', 'n1', 1, 50, true),
            running('c1', 'B', 'n2', 1, 900, true),
            running('c2', 'B', 'n2', 2, 950, true),
          ],
          pending: [job('a1', 'A', 3, 960)],
        }),
      );
      expect(d.preempt.map((p) => [p.jobId, p.nodeId])).toEqual([['b-old', 'n1']]);
      expect(d.admit).toEqual([{ jobId: 'a1', nodeId: 'n1', borrowed: false }]);
    });

    it('rates lost work by the victims it evicts, not by those dropped as unneeded', () => {
      // One eviction each: n1 loses 3 × 500 (b-old; b-young is not needed), n2 3 × 520 (c).
      // Counting b-young's 1 × 100 too would make n1 lose 1600 and pick n2.
      const d = decide(
        snapshot({
          nodes: [gpuNode('n1', 4), gpuNode('n2', 3)],
          quotas: [quota('A', 4, 4), quota('B', 0, 8)],
          active: [
            running('b-old', 'B', 'n1', 3, 500, true),
            running('b-young', 'B', 'n1', 1, 900, true),
            running('c', 'B', 'n2', 3, 480, true),
          ],
          pending: [job('a1', 'A', 3, 950)],
        }),
      );
      expect(d.preempt.map((p) => [p.jobId, p.nodeId])).toEqual([['b-old', 'n1']]);
      expect(d.admit).toEqual([{ jobId: 'a1', nodeId: 'n1', borrowed: false }]);
    });
  });

  it('does not mutate its input', () => {
    const state = snapshot({
      nodes: [cpuNode('c1', 1), cpuNode('c2', 1)],
      quotas: [quota('A', 1, 2, 'CPU'), quota('B', 1, 2, 'CPU')],
      active: [running('a-old', 'A', 'c1', 1, 100, false, 'CPU'), running('a-young', 'A', 'c2', 1, 200, true, 'CPU')],
      pending: [job('b1', 'B', 1, 300, 'CPU'), job('b2', 'B', 1, 301, 'CPU')],
    });
    const before = structuredClone(state);
    const d = decide(state);
    expect(d.preempt).toHaveLength(1);
    expect(state).toEqual(before);
  });

  it('is deterministic regardless of input order', () => {
    const nodes = Array.from({ length: 6 }, (_, i) => gpuNode(`n${i}`, 4));
    const pending = Array.from({ length: 40 }, (_, i) => job(`j${i}`, `t${i % 5}`, [1, 2, 4][i % 3], i % 7));
    const quotas = Array.from({ length: 5 }, (_, i) => quota(`t${i}`, 4 + i, 8));
    const a = decide(snapshot({ nodes, quotas, pending }));
    const b = decide(snapshot({ nodes: [...nodes].reverse(), quotas: [...quotas].reverse(), pending: [...pending].reverse() }));
    expect(a.admit.length).toBeGreaterThan(0);
    expect(b).toEqual(a);
  });
});

describe('Admitter', () => {
  const state = () => ({
    nodes: [cpuNode('c1', 1), cpuNode('c2', 1)],
    quotas: [quota('A', 1, 2, 'CPU'), quota('B', 1, 2, 'CPU')],
    defaultQuota: { CPU: { guaranteed: 0, limit: 0 }, GPU: { guaranteed: 0, limit: 0 } },
    active: [],
    pending: [],
  });

  it('keeps admitted jobs active and requeues preempted jobs with their original enqueuedAt', () => {
    const admitter = new Admitter(state());
    admitter.enqueue(job('a1', 'A', 1, 1, 'CPU'));
    admitter.enqueue(job('a2', 'A', 1, 2, 'CPU'));
    expect(admitter.decide(10).admit.map((a) => [a.jobId, a.borrowed])).toEqual([
      ['a1', false],
      ['a2', true],
    ]);
    expect(admitter.decide(11)).toEqual({ admit: [], preempt: [] });

    admitter.enqueue(job('b1', 'B', 1, 20, 'CPU'));
    const d = admitter.decide(21);
    expect(d.preempt.map((p) => p.jobId)).toEqual(['a2']);
    expect(d.admit.map((a) => a.jobId)).toEqual(['b1']);
    expect(admitter.isPending('a2')).toBe(true);
    expect(admitter.pendingCount()).toEqual([{ tenantId: 'A', hardware: 'CPU', jobs: 1, devices: 1 }]);

    // The requeued job comes back when capacity frees up.
    expect(admitter.jobFinished('a1')).toBe(true);
    expect(admitter.decide(30).admit).toEqual([{ jobId: 'a2', nodeId: 'c1', borrowed: false }]);
    expect(admitter.activeJob('a2')).toMatchObject({ enqueuedAt: 2, admittedAt: 30, nodeId: 'c1' });
  });

  it('leaves requeueing to the caller when asked', () => {
    const admitter = new Admitter(
      { ...state(), active: [running('a1', 'A', 'c1', 1, 1, false, 'CPU'), running('a2', 'A', 'c2', 1, 2, true, 'CPU')] },
      { requeueEvicted: false },
    );
    admitter.enqueue(job('b1', 'B', 1, 3, 'CPU'));
    expect(admitter.decide(4).preempt.map((p) => p.jobId)).toEqual(['a2']);
    expect(admitter.isPending('a2')).toBe(false);
    expect(admitter.activeJob('a2')).toBeUndefined();
  });

  it('reports usage per tenant and hardware', () => {
    const admitter = new Admitter(state());
    admitter.enqueue(job('a1', 'A', 1, 1, 'CPU'));
    admitter.enqueue(job('a2', 'A', 1, 2, 'CPU'));
    admitter.decide(5);
    expect(admitter.snapshotUsage()).toEqual([
      { tenantId: 'A', hardware: 'CPU', used: 2, borrowed: 1, guaranteed: 1, limit: 2 },
      { tenantId: 'B', hardware: 'CPU', used: 0, borrowed: 0, guaranteed: 1, limit: 2 },
    ]);
  });

  it('tracks node changes: added capacity is used, removed nodes give their jobs back to the queue', () => {
    const admitter = new Admitter(state());
    admitter.setQuota(quota('A', 3, 3, 'CPU'));
    for (const id of ['a1', 'a2', 'a3']) admitter.enqueue(job(id, 'A', 1, Number(id[1]), 'CPU'));
    expect(admitter.decide(5).admit).toHaveLength(2);
    admitter.addNode(cpuNode('c3', 1));
    expect(admitter.decide(6).admit).toEqual([{ jobId: 'a3', nodeId: 'c3', borrowed: false }]);

    expect(admitter.removeNode('c1').map((j) => j.id)).toEqual(['a1']);
    expect(admitter.isPending('a1')).toBe(true);
    expect(admitter.decide(7)).toEqual({ admit: [], preempt: [] });
    admitter.updateNode(cpuNode('c2', 2));
    expect(admitter.decide(8).admit).toEqual([{ jobId: 'a1', nodeId: 'c2', borrowed: false }]);
  });

  describe('a guarantee that changes', () => {
    // A holds both GPUs of n1 within its guarantee of 2: neither job was admitted borrowed.
    const holding = () =>
      new Admitter({
        nodes: [gpuNode('n1', 2)],
        quotas: [quota('A', 2, 2), quota('B', 0, 2)],
        defaultQuota: { CPU: { guaranteed: 0, limit: 0 }, GPU: { guaranteed: 0, limit: 0 } },
        active: [running('a-old', 'A', 'n1', 1, 100, false), running('a-young', 'A', 'n1', 1, 200, false)],
        pending: [],
      });

    it('a guarantee moved to another tenant is honoured: the jobs now above the old owner’s guarantee are preemptible', () => {
      const admitter = holding();
      const reflagged = admitter.setQuota(quota('A', 0, 2));
      admitter.setQuota(quota('B', 2, 2));
      admitter.enqueue(job('b1', 'B', 1, 300));
      const d = admitter.decide(400);
      expect(d.preempt).toEqual([
        expect.objectContaining({ jobId: 'a-young', nodeId: 'n1', forJobId: 'b1', victim: expect.objectContaining({ id: 'a-young', borrowed: true }) }),
      ]);
      expect(d.admit).toEqual([{ jobId: 'b1', nodeId: 'n1', borrowed: false }]);
      // What changed, for the caller to persist: both jobs are beyond A's guarantee of 0 now.
      expect(reflagged.map((j) => [j.id, j.borrowed])).toEqual([
        ['a-young', true],
        ['a-old', true],
      ]);
    });

    it('a lowered guarantee makes only the youngest jobs borrowed, until the rest fit', () => {
      const admitter = holding();
      expect(admitter.setQuota(quota('A', 1, 2)).map((j) => j.id)).toEqual(['a-young']);
      expect(admitter.activeJob('a-old')).toMatchObject({ borrowed: false });
      expect(admitter.snapshotUsage()[0]).toMatchObject({ tenantId: 'A', used: 2, borrowed: 1, guaranteed: 1 });
      admitter.setQuota(quota('B', 1, 2));
      admitter.enqueue(job('b1', 'B', 1, 300));
      expect(admitter.decide(400).preempt.map((p) => p.jobId)).toEqual(['a-young']);
    });

    it('a tenant whose guarantee is raised or unchanged keeps its jobs unpreemptible', () => {
      const admitter = holding();
      expect(admitter.setQuota(quota('A', 2, 2))).toEqual([]);
      expect(admitter.setQuota(quota('A', 3, 4))).toEqual([]);
      admitter.setQuota(quota('B', 2, 2));
      admitter.enqueue(job('b1', 'B', 1, 300));
      expect(admitter.decide(400)).toEqual({ admit: [], preempt: [] });
      expect(admitter.snapshotUsage()[0]).toMatchObject({ tenantId: 'A', used: 2, borrowed: 0 });
    });

    it('a rebuilt admitter flags jobs beyond a guarantee lowered while none ran', () => {
      const d = decide(
        snapshot({
          nodes: [gpuNode('n1', 2)],
          quotas: [quota('A', 0, 2), quota('B', 2, 2)],
          active: [running('a-old', 'A', 'n1', 1, 100, false), running('a-young', 'A', 'n1', 1, 200, false)],
          pending: [job('b1', 'B', 1, 300)],
        }),
      );
      expect(d.preempt.map((p) => p.jobId)).toEqual(['a-young']);
      expect(d.admit).toEqual([{ jobId: 'b1', nodeId: 'n1', borrowed: false }]);
    });
  });

  it('forgets dequeued jobs and rejects duplicate ids and bad sizes', () => {
    const admitter = new Admitter(state());
    admitter.enqueue(job('a1', 'A', 1, 1, 'CPU'));
    expect(() => admitter.enqueue(job('a1', 'A', 1, 1, 'CPU'))).toThrow(/already known/);
    expect(() => admitter.enqueue(job('a0', 'A', 0, 1, 'CPU'))).toThrow(RangeError);
    expect(() => admitter.setQuota(quota('A', 3, 2, 'CPU'))).toThrow(RangeError);
    expect(admitter.dequeue('a1')).toBe(true);
    expect(admitter.dequeue('a1')).toBe(false);
    expect(admitter.decide(2)).toEqual({ admit: [], preempt: [] });
    expect(admitter.pendingCount()).toEqual([]);
  });
});
