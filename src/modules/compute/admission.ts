/**
 * Admission: which queued jobs start, on which node, and which running jobs are preempted for
 * them (in the spirit of Kubernetes Kueue / Run:ai). Pure: no I/O and no clock, time is passed in,
 * so the control plane, the unit tests and the simulation benchmark all run the same code.
 *
 * Policy, per hardware class (CPU and GPU never compete):
 * - Quota: a tenant holds `guaranteed` devices it can always get back, and may BORROW idle
 *   capacity up to `limit`. A job admitted beyond the guarantee is `borrowed` (preemptible).
 *   Borrowing follows current usage, not admission history: when a tenant's guarantee is lowered
 *   below what its non-borrowed jobs hold, its youngest of them become borrowed until the rest fit
 *   (setQuota returns them, so the caller can persist the flag), and a guarantee moved to another
 *   tenant can be reclaimed from them. A raised guarantee leaves borrowed jobs borrowed.
 * - Two passes per decision, as in Kueue: first jobs that fit within their tenant's guarantee
 *   (these may reclaim capacity by preemption), then jobs that need to borrow (never preempt).
 *   Serving guaranteed work first also means a job borrowed in a decision is never reclaimed by
 *   the same decision.
 * - Fair share between tenants: lowest used/guaranteed first; a tenant with no guarantee only
 *   ever borrows, so it ranks after every tenant that has one (among themselves: lowest usage).
 *   Ties: the older candidate job, then job id, so decisions are deterministic.
 * - Within a tenant: higher priority, then older, then id. A job that cannot start (quota or no
 *   node fits) is skipped, so it blocks neither other tenants nor the tenant's own smaller jobs.
 *   Consequence, accepted and out of scope: a large job can starve behind a stream of small
 *   jobs unless its tenant is within guarantee, where preemption makes room for it.
 * - Placement is best-fit (node with the fewest free devices that still fit, ties by node id) to
 *   keep whole nodes free for large jobs.
 * - Preemption (reclaim): a job within its tenant's guarantee that no node fits evicts borrowed
 *   jobs of OTHER tenants that are still above their own guarantee, on the one node that needs
 *   the fewest evictions (ties: least lost device-seconds, then node id), and is admitted there at
 *   once. On each node victims are picked youngest first until enough devices are free, then any
 *   the others make unnecessary are dropped (as in Kueue), so every job evicted is needed.
 *   Non-borrowed jobs (within their tenant's current guarantee) are never preempted; no plan, no
 *   eviction.
 */

export type Hardware = 'CPU' | 'GPU';
export const HARDWARE: readonly Hardware[] = ['CPU', 'GPU'];

export interface QuotaLimits {
  /** Devices the tenant can always get (reclaimed by preemption if borrowed away). */
  guaranteed: number;
  /** Hard cap including borrowed devices; >= guaranteed. */
  limit: number;
}
export interface QuotaSpec extends QuotaLimits {
  tenantId: string;
  hardware: Hardware;
}
/** A READY node. Free devices are derived from the active jobs placed on it. */
export interface NodeSpec {
  id: string;
  hardware: Hardware;
  totalDevices: number;
}
export interface PendingJob {
  id: string;
  tenantId: string;
  hardware: Hardware;
  /** Devices needed on ONE node, >= 1. */
  devices: number;
  /** Queue position (e.g. epoch ms); a preempted job keeps it so it does not lose its place. */
  enqueuedAt: number;
  /** Higher first, within the tenant only; default 0. */
  priority?: number;
}
export interface ActiveJob extends PendingJob {
  nodeId: string;
  admittedAt: number;
  /** Held beyond the tenant's guarantee (admitted so, or the guarantee lowered since), hence preemptible. */
  borrowed: boolean;
}
/** Everything the admitter needs, e.g. rebuilt from Postgres at control-plane startup. */
export interface AdmitterState {
  nodes: NodeSpec[];
  quotas: QuotaSpec[];
  /** Quota of tenants without a row for a hardware class. */
  defaultQuota: Record<Hardware, QuotaLimits>;
  active: ActiveJob[];
  pending: PendingJob[];
}
export interface AdmissionSnapshot extends AdmitterState {
  now: number;
}
export interface Admission {
  jobId: string;
  nodeId: string;
  borrowed: boolean;
}
export interface Preemption {
  jobId: string;
  nodeId: string;
  reason: string;
  /** The job admitted onto the devices this preemption frees. */
  forJobId: string;
  /** The preempted job as it ran, so a caller whose write of this decision failed can restore it. */
  victim: ActiveJob;
}
/** Apply `preempt` before `admit`: admitted jobs may use the devices the preemptions free. */
export interface Decision {
  admit: Admission[];
  preempt: Preemption[];
}
export interface AdmitterOptions {
  /**
   * Put preempted jobs and jobs of removed nodes back in the queue with their original
   * enqueuedAt (default true). Set false when the caller re-enqueues them itself.
   */
  requeueEvicted?: boolean;
}
export interface UsageRow extends QuotaLimits {
  tenantId: string;
  hardware: Hardware;
  /** Devices held by active jobs. */
  used: number;
  /** Devices held by active jobs admitted as borrowed (preemptible). */
  borrowed: number;
}
export interface PendingRow {
  tenantId: string;
  hardware: Hardware;
  jobs: number;
  devices: number;
}

/** One-shot decision over a snapshot; the snapshot is not modified. */
export function decide(snapshot: AdmissionSnapshot): Decision {
  return new Admitter(snapshot).decide(snapshot.now);
}

/** The key of a tenant's queue for one hardware class. */
const tenantKey = (tenantId: string, hardware: Hardware) => `${tenantId}\u0000${hardware}`;

/**
 * Stateful admitter that keeps its indexes between decisions: the control plane holds one in
 * memory, feeds it events (enqueue, jobFinished, node and quota changes) and calls decide().
 * After decide(), admitted jobs are active and preempted jobs are queued again.
 */
export class Admitter {
  private readonly defaultQuota: Record<Hardware, QuotaLimits>;
  private readonly requeueEvicted: boolean;
  private readonly tenants = new Map<string, TenantQueue>();
  /** Tenant queues with at least one pending job: the only ones a decision looks at. */
  private readonly waiting = new Set<TenantQueue>();
  private readonly pending = new Map<string, PendingJob>();
  private readonly active = new Map<string, ActiveRecord>();
  private readonly nodes = new Map<string, NodeState>();
  /** Active jobs by node id, including nodes not (or no longer) known, so addNode can count them. */
  private readonly jobsOnNode = new Map<string, Set<ActiveRecord>>();
  private readonly free: Record<Hardware, FreeIndex> = { CPU: new FreeIndex(), GPU: new FreeIndex() };
  /** Nodes holding borrowed jobs: the only places preemption can make room. */
  private readonly lendingNodes: Record<Hardware, Set<NodeState>> = { CPU: new Set(), GPU: new Set() };
  /** Scratch list of the reclaim plan being evaluated. */
  private readonly victims: ActiveRecord[] = [];

  constructor(state?: AdmitterState, options: AdmitterOptions = {}) {
    this.requeueEvicted = options.requeueEvicted ?? true;
    const defaults = state?.defaultQuota ?? { CPU: { guaranteed: 0, limit: 0 }, GPU: { guaranteed: 0, limit: 0 } };
    for (const hw of HARDWARE) checkQuota(defaults[hw]);
    this.defaultQuota = { CPU: { ...defaults.CPU }, GPU: { ...defaults.GPU } };
    if (!state) return;
    for (const q of state.quotas) this.setQuota(q);
    for (const n of state.nodes) this.addNode(n);
    for (const j of state.active) this.addActive(j);
    // A guarantee lowered while no admitter ran (or whose re-flagging was not persisted).
    for (const tq of this.tenants.values()) this.lendExcess(tq);
    for (const j of state.pending) this.enqueue(j);
  }

  /**
   * Sets a tenant's quota. Returns the tenant's jobs that became borrowed (preemptible) because the
   * guarantee no longer covers them, as they run now, for the caller to persist; usually none.
   */
  setQuota(quota: QuotaSpec): ActiveJob[] {
    checkQuota(quota);
    const tq = this.tenant(quota.tenantId, quota.hardware);
    tq.quota = { guaranteed: quota.guaranteed, limit: quota.limit };
    return this.lendExcess(tq);
  }

  /** The tenant's own quota for the hardware, if it has one (else the default applies). */
  explicitQuota(tenantId: string, hardware: Hardware): QuotaLimits | undefined {
    return this.tenants.get(tenantKey(tenantId, hardware))?.quota ?? undefined;
  }

  addNode(node: NodeSpec): void {
    if (this.nodes.has(node.id)) throw new Error(`node ${node.id} already added`);
    checkCount('totalDevices', node.totalDevices, 0);
    const state: NodeState = { spec: { ...node }, used: 0, borrowed: 0, lenders: [] };
    for (const r of this.jobsOnNode.get(node.id) ?? []) occupy(state, r);
    this.nodes.set(node.id, state);
    this.index(state);
  }

  /** Changes a node's device count or class (e.g. a GPU went unhealthy); its jobs stay. */
  updateNode(node: NodeSpec): void {
    const state = this.nodes.get(node.id);
    if (!state) return this.addNode(node);
    checkCount('totalDevices', node.totalDevices, 0);
    this.unindex(state);
    state.spec = { ...node };
    this.index(state);
  }

  /** Removes a node (lost, draining); returns the jobs that ran on it, requeued unless disabled. */
  removeNode(nodeId: string): ActiveJob[] {
    const state = this.nodes.get(nodeId);
    if (!state) return [];
    const evicted = [...(this.jobsOnNode.get(nodeId) ?? [])].map((r) => this.release(r));
    this.unindex(state);
    this.nodes.delete(nodeId);
    if (this.requeueEvicted) for (const job of evicted) this.enqueue(toPending(job));
    return evicted;
  }

  enqueue(job: PendingJob): void {
    checkCount('devices', job.devices, 1);
    this.checkNewId(job.id);
    const copy = { ...job };
    const tq = this.tenant(job.tenantId, job.hardware);
    this.pending.set(job.id, copy);
    tq.pendingJobs++;
    tq.pendingDevices += job.devices;
    let heap = tq.bySize.get(job.devices);
    if (!heap) tq.bySize.set(job.devices, (heap = new Heap<PendingJob>(jobBefore)));
    heap.push(copy);
    this.waiting.add(tq);
  }

  /** Removes a queued job (cancelled); false if it is not queued. */
  dequeue(jobId: string): boolean {
    const job = this.pending.get(jobId);
    if (!job) return false;
    this.unqueue(job);
    return true;
  }

  /** Registers a running job (startup rebuild, or a job found running by reconciliation). */
  addActive(job: ActiveJob): void {
    checkCount('devices', job.devices, 1);
    this.checkNewId(job.id);
    const record: ActiveRecord = { job: { ...job }, tq: this.tenant(job.tenantId, job.hardware) };
    this.active.set(job.id, record);
    record.tq.used += job.devices;
    if (job.borrowed) record.tq.borrowed += job.devices;
    record.tq.active.add(record);
    let onNode = this.jobsOnNode.get(job.nodeId);
    if (!onNode) this.jobsOnNode.set(job.nodeId, (onNode = new Set()));
    onNode.add(record);
    this.updateNodeState(job.nodeId, (node) => occupy(node, record));
  }

  /** Releases a running job's devices and quota (finished, failed or cancelled); false if unknown. */
  jobFinished(jobId: string): boolean {
    const record = this.active.get(jobId);
    if (!record) return false;
    this.release(record);
    return true;
  }

  decide(now: number): Decision {
    const round: Round = { now, admit: [], preempt: [], evicted: [], noReclaimFrom: new Map() };
    this.admitPass('guaranteed', round);
    this.admitPass('borrow', round);
    // Requeued only now, so a job is never preempted and re-admitted by the same decision.
    if (this.requeueEvicted) for (const job of round.evicted) this.enqueue(toPending(job));
    return { admit: round.admit, preempt: round.preempt };
  }

  /** Per tenant × hardware usage for metrics, sorted by tenant then hardware. */
  snapshotUsage(): UsageRow[] {
    return this.sortedTenants().map((tq) => ({
      tenantId: tq.tenantId,
      hardware: tq.hardware,
      used: tq.used,
      borrowed: tq.borrowed,
      ...this.quotaOf(tq),
    }));
  }

  /** Queued jobs and devices per tenant × hardware (only non-empty queues). */
  pendingCount(): PendingRow[] {
    return this.sortedTenants()
      .filter((tq) => tq.pendingJobs > 0)
      .map((tq) => ({ tenantId: tq.tenantId, hardware: tq.hardware, jobs: tq.pendingJobs, devices: tq.pendingDevices }));
  }

  isPending(jobId: string): boolean {
    return this.pending.has(jobId);
  }

  activeJob(jobId: string): ActiveJob | undefined {
    const record = this.active.get(jobId);
    return record && { ...record.job };
  }

  /** Admits jobs of one pass, best candidate first, until no candidate is left. */
  private admitPass(pass: Pass, round: Round): void {
    for (;;) {
      const pick = this.pickNext(pass, round);
      if (!pick) return;
      const { tq, job } = pick;
      const nodeId = this.free[job.hardware].bestFit(job.devices) ?? (pass === 'guaranteed' ? this.reclaim(tq, job, round) : undefined);
      if (nodeId === undefined) {
        // Reclaim failed for this size: larger jobs of the tenant would fail too, in this decision.
        round.noReclaimFrom.set(tq, Math.min(job.devices, round.noReclaimFrom.get(tq) ?? Infinity));
        continue;
      }
      this.admit(tq, job, nodeId, round);
    }
  }

  /** The fair-share winner among tenants' candidates for this pass. */
  private pickNext(pass: Pass, round: Round): { tq: TenantQueue; job: PendingJob } | undefined {
    const maxFree: Record<Hardware, number> = { CPU: this.free.CPU.maxFree(), GPU: this.free.GPU.maxFree() };
    let best: { tq: TenantQueue; job: PendingJob } | undefined;
    for (const tq of this.waiting) {
      const reclaimBelow = pass === 'guaranteed' ? (round.noReclaimFrom.get(tq) ?? Infinity) : 0;
      const job = this.candidate(tq, pass, maxFree[tq.hardware], reclaimBelow);
      if (job && (!best || this.tenantBefore(tq, job, best.tq, best.job))) best = { tq, job };
    }
    return best;
  }

  /**
   * The tenant's best queued job that could start in this pass: within guarantee (pass 1) or
   * limit (pass 2), and fitting a node now or (pass 1) possibly after reclaiming. One heap per
   * job size makes this a scan over sizes: all jobs of a size are equally (in)feasible.
   */
  private candidate(tq: TenantQueue, pass: Pass, maxFree: number, reclaimBelow: number): PendingJob | undefined {
    const quota = this.quotaOf(tq);
    const cap = pass === 'guaranteed' ? quota.guaranteed : quota.limit;
    let best: PendingJob | undefined;
    for (const [devices, heap] of tq.bySize) {
      if (tq.used + devices > cap) continue;
      if (devices > maxFree && devices >= reclaimBelow) continue;
      const head = this.headOf(heap);
      if (!head) {
        tq.bySize.delete(devices);
        continue;
      }
      if (!best || jobBefore(head, best)) best = head;
    }
    return best;
  }

  /** Heap head, dropping entries of jobs that were dequeued or admitted since (lazy deletion). */
  private headOf(heap: Heap<PendingJob>): PendingJob | undefined {
    for (let head = heap.peek(); head; head = heap.peek()) {
      if (this.pending.get(head.id) === head) return head;
      heap.pop();
    }
    return undefined;
  }

  private tenantBefore(a: TenantQueue, aJob: PendingJob, b: TenantQueue, bJob: PendingJob): boolean {
    const qa = this.quotaOf(a).guaranteed;
    const qb = this.quotaOf(b).guaranteed;
    if ((qa > 0) !== (qb > 0)) return qa > 0;
    const sa = qa > 0 ? a.used / qa : a.used;
    const sb = qb > 0 ? b.used / qb : b.used;
    if (sa !== sb) return sa < sb;
    if (aJob.enqueuedAt !== bJob.enqueuedAt) return aJob.enqueuedAt < bJob.enqueuedAt;
    return aJob.id < bJob.id;
  }

  private admit(tq: TenantQueue, job: PendingJob, nodeId: string, round: Round): void {
    const borrowed = tq.used + job.devices > this.quotaOf(tq).guaranteed;
    this.unqueue(job);
    this.addActive({ ...job, nodeId, admittedAt: round.now, borrowed });
    round.admit.push({ jobId: job.id, nodeId, borrowed });
  }

  /** Evicts the cheapest reclaim plan's victims for `job`; returns the node it frees, if any. */
  private reclaim(tq: TenantQueue, job: PendingJob, round: Round): string | undefined {
    let best: ReclaimPlan | undefined;
    for (const node of this.lendingNodes[job.hardware]) {
      const plan = this.planOn(node, job.devices, round.now);
      if (!plan) continue;
      if (!best || planBefore({ node, ...plan }, best)) best = { node, ...plan };
    }
    if (!best) return undefined;
    this.planOn(best.node, job.devices, round.now);
    for (const victim of [...this.victims]) {
      const released = this.release(victim);
      round.evicted.push(released);
      round.preempt.push({
        jobId: victim.job.id,
        nodeId: best.node.spec.id,
        reason: `reclaimed for tenant ${tq.tenantId}, within its guaranteed ${job.hardware} quota`,
        forJobId: job.id,
        victim: { ...released },
      });
    }
    return best.node.spec.id;
  }

  /**
   * Picks victims on one node into this.victims (reused: this runs for every lending node), youngest
   * first, until `devices` are free. A borrowed job is a victim only while its tenant is still above
   * its guarantee, counting victims already picked: a tenant whose other jobs ended is entitled to
   * what it holds, and this keeps reclaim from ping-ponging between tenants. It also excludes the
   * requesting tenant, which is within its guarantee.
   * Then, as Kueue does, drops the victims the others make unnecessary: walking back from the
   * second-to-last (the last one made it fit), a victim whose devices are not needed for `devices`
   * to stay free is kept running. Every remaining victim is then needed, and the plan's count and
   * lost work are those of the jobs actually evicted. Dropping a victim leaves its tenant holding
   * more, so the others stay above their guarantee.
   */
  private planOn(node: NodeState, devices: number, now: number): Omit<ReclaimPlan, 'node'> | undefined {
    let free = node.spec.totalDevices - node.used;
    if (free + node.borrowed < devices) return undefined;
    const victims = this.victims;
    victims.length = 0;
    for (const r of node.lenders) {
      if (free >= devices) break;
      if (!this.aboveGuarantee(r.tq, victims)) continue;
      victims.push(r);
      free += r.job.devices;
    }
    if (free < devices) return undefined;
    for (let i = victims.length - 2; i >= 0; i--) {
      if (free - victims[i].job.devices < devices) continue;
      free -= victims[i].job.devices;
      victims.splice(i, 1);
    }
    let lost = 0;
    for (const r of victims) lost += r.job.devices * Math.max(0, now - r.job.admittedAt);
    return { victims: victims.length, lost };
  }

  /** Whether the tenant still holds more than its guarantee once `picked` are evicted. */
  private aboveGuarantee(tq: TenantQueue, picked: ActiveRecord[]): boolean {
    let used = tq.used;
    for (const p of picked) if (p.tq === tq) used -= p.job.devices;
    return used > this.quotaOf(tq).guaranteed;
  }

  /**
   * Flags the tenant's youngest non-borrowed jobs borrowed until its non-borrowed devices fit its
   * guarantee (they stay borrowed, as jobs admitted borrowed do), so that reclaim can take back
   * what the guarantee no longer covers; returns them. O(1) unless the guarantee was lowered.
   */
  private lendExcess(tq: TenantQueue): ActiveJob[] {
    const guaranteed = this.quotaOf(tq).guaranteed;
    if (tq.used - tq.borrowed <= guaranteed) return [];
    const own = [...tq.active].filter((r) => !r.job.borrowed).sort((a, b) => (youngerFirst(a.job, b.job) ? -1 : 1));
    const changed: ActiveJob[] = [];
    for (const r of own) {
      if (tq.used - tq.borrowed <= guaranteed) break;
      this.updateNodeState(r.job.nodeId, (node) => vacate(node, r));
      r.job.borrowed = true;
      tq.borrowed += r.job.devices;
      this.updateNodeState(r.job.nodeId, (node) => occupy(node, r));
      changed.push({ ...r.job });
    }
    return changed;
  }

  /** Removes an active job and returns it. */
  private release(record: ActiveRecord): ActiveJob {
    const { job, tq } = record;
    this.active.delete(job.id);
    tq.used -= job.devices;
    if (job.borrowed) tq.borrowed -= job.devices;
    tq.active.delete(record);
    const onNode = this.jobsOnNode.get(job.nodeId);
    onNode?.delete(record);
    if (onNode?.size === 0) this.jobsOnNode.delete(job.nodeId);
    this.updateNodeState(job.nodeId, (node) => vacate(node, record));
    return { ...job };
  }

  private unqueue(job: PendingJob): void {
    // The heap entry goes stale and is dropped lazily by headOf.
    this.pending.delete(job.id);
    const tq = this.tenant(job.tenantId, job.hardware);
    tq.pendingJobs--;
    tq.pendingDevices -= job.devices;
    if (tq.pendingJobs === 0) this.waiting.delete(tq);
  }

  /** Applies a change to a known node, keeping the indexes in step. */
  private updateNodeState(nodeId: string, change: (node: NodeState) => void): void {
    const node = this.nodes.get(nodeId);
    if (!node) return;
    this.unindex(node);
    change(node);
    this.index(node);
  }

  private index(node: NodeState): void {
    this.free[node.spec.hardware].add(node.spec.id, freeOf(node));
    if (node.borrowed > 0) this.lendingNodes[node.spec.hardware].add(node);
  }

  private unindex(node: NodeState): void {
    this.free[node.spec.hardware].remove(node.spec.id, freeOf(node));
    this.lendingNodes[node.spec.hardware].delete(node);
  }

  private tenant(tenantId: string, hardware: Hardware): TenantQueue {
    const key = tenantKey(tenantId, hardware);
    let tq = this.tenants.get(key);
    if (!tq) this.tenants.set(key, (tq = new TenantQueue(tenantId, hardware)));
    return tq;
  }

  private quotaOf(tq: TenantQueue): QuotaLimits {
    return tq.quota ?? this.defaultQuota[tq.hardware];
  }

  private sortedTenants(): TenantQueue[] {
    return [...this.tenants.values()].sort((a, b) =>
      a.tenantId !== b.tenantId ? (a.tenantId < b.tenantId ? -1 : 1) : a.hardware < b.hardware ? -1 : a.hardware > b.hardware ? 1 : 0,
    );
  }

  private checkNewId(jobId: string): void {
    if (this.pending.has(jobId) || this.active.has(jobId)) throw new Error(`job ${jobId} is already known to the admitter`);
  }
}

type Pass = 'guaranteed' | 'borrow';

/** Scratch state of one decide() call. */
interface Round {
  now: number;
  admit: Admission[];
  preempt: Preemption[];
  evicted: ActiveJob[];
  /** Per tenant: smallest job size for which reclaim already failed in this decision. */
  noReclaimFrom: Map<TenantQueue, number>;
}

interface ReclaimPlan {
  node: NodeState;
  victims: number;
  /** Device-seconds of work the victims lose. */
  lost: number;
}

interface ActiveRecord {
  job: ActiveJob;
  tq: TenantQueue;
}

interface NodeState {
  spec: NodeSpec;
  used: number;
  /** Devices held by borrowed jobs. */
  borrowed: number;
  /** Borrowed jobs, youngest first (the order reclaim picks victims in). */
  lenders: ActiveRecord[];
}

/** One tenant's usage and queue for one hardware class. */
class TenantQueue {
  quota: QuotaLimits | undefined;
  used = 0;
  borrowed = 0;
  /** The tenant's active jobs on this hardware. */
  readonly active = new Set<ActiveRecord>();
  pendingJobs = 0;
  pendingDevices = 0;
  /** Pending jobs by size, each in tenant order (priority, age, id). */
  readonly bySize = new Map<number, Heap<PendingJob>>();

  constructor(
    readonly tenantId: string,
    readonly hardware: Hardware,
  ) {}
}

/**
 * Node ids bucketed by free devices, each bucket sorted by id: best-fit is a scan over device
 * counts (8 for a GPU node) rather than over nodes.
 */
class FreeIndex {
  private readonly buckets: string[][] = [];

  add(nodeId: string, free: number): void {
    while (this.buckets.length <= free) this.buckets.push([]);
    const bucket = this.buckets[free];
    bucket.splice(lowerBound(bucket, nodeId), 0, nodeId);
  }

  remove(nodeId: string, free: number): void {
    const bucket = this.buckets[free];
    const i = lowerBound(bucket, nodeId);
    if (bucket[i] === nodeId) bucket.splice(i, 1);
  }

  bestFit(devices: number): string | undefined {
    for (let f = devices; f < this.buckets.length; f++) if (this.buckets[f].length > 0) return this.buckets[f][0];
    return undefined;
  }

  maxFree(): number {
    for (let f = this.buckets.length - 1; f > 0; f--) if (this.buckets[f].length > 0) return f;
    return 0;
  }
}

/** Binary min-heap ordered by `before`. */
class Heap<T> {
  private readonly items: T[] = [];

  constructor(private readonly before: (a: T, b: T) => boolean) {}

  peek(): T | undefined {
    return this.items[0];
  }

  push(item: T): void {
    const items = this.items;
    let i = items.push(item) - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (!this.before(items[i], items[parent])) break;
      [items[i], items[parent]] = [items[parent], items[i]];
      i = parent;
    }
  }

  pop(): T | undefined {
    const items = this.items;
    const top = items[0];
    const last = items.pop();
    if (items.length === 0 || last === undefined) return top;
    items[0] = last;
    for (let i = 0; ; ) {
      const l = 2 * i + 1;
      const r = l + 1;
      let m = i;
      if (l < items.length && this.before(items[l], items[m])) m = l;
      if (r < items.length && this.before(items[r], items[m])) m = r;
      if (m === i) return top;
      [items[i], items[m]] = [items[m], items[i]];
      i = m;
    }
  }
}

/** Tenant-internal order: higher priority, then older, then id. */
function jobBefore(a: PendingJob, b: PendingJob): boolean {
  const pa = a.priority ?? 0;
  const pb = b.priority ?? 0;
  if (pa !== pb) return pa > pb;
  if (a.enqueuedAt !== b.enqueuedAt) return a.enqueuedAt < b.enqueuedAt;
  return a.id < b.id;
}

/** Fewest evictions, then least lost work (youngest victims), then node id. */
function planBefore(a: ReclaimPlan, b: ReclaimPlan): boolean {
  if (a.victims !== b.victims) return a.victims < b.victims;
  if (a.lost !== b.lost) return a.lost < b.lost;
  return a.node.spec.id < b.node.spec.id;
}

function youngerFirst(a: ActiveJob, b: ActiveJob): boolean {
  return a.admittedAt !== b.admittedAt ? a.admittedAt > b.admittedAt : a.id < b.id;
}

function occupy(node: NodeState, record: ActiveRecord): void {
  const { job } = record;
  node.used += job.devices;
  if (!job.borrowed) return;
  node.borrowed += job.devices;
  let i = 0;
  while (i < node.lenders.length && youngerFirst(node.lenders[i].job, job)) i++;
  node.lenders.splice(i, 0, record);
}

function vacate(node: NodeState, record: ActiveRecord): void {
  node.used -= record.job.devices;
  if (!record.job.borrowed) return;
  node.borrowed -= record.job.devices;
  node.lenders.splice(node.lenders.indexOf(record), 1);
}

function freeOf(node: NodeState): number {
  return Math.max(0, node.spec.totalDevices - node.used);
}

/** The queued form of a job that ran (or was admitted): what it asked for, and when. */
export function toPending(job: ActiveJob): PendingJob {
  const { id, tenantId, hardware, devices, enqueuedAt, priority } = job;
  return priority === undefined ? { id, tenantId, hardware, devices, enqueuedAt } : { id, tenantId, hardware, devices, enqueuedAt, priority };
}

function lowerBound(sorted: string[], key: string): number {
  let lo = 0;
  let hi = sorted.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (sorted[mid] < key) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

function checkCount(name: string, value: number, min: number): void {
  if (!Number.isInteger(value) || value < min) throw new RangeError(`${name} must be an integer >= ${min}, got ${value}`);
}

function checkQuota(q: QuotaLimits): void {
  checkCount('guaranteed', q.guaranteed, 0);
  checkCount('limit', q.limit, q.guaranteed);
}
