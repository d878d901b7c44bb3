/**
 * Scheduler benchmark: a discrete-event simulation (simulated clock, no Redis, no DB) of a GPU
 * cluster shared by tenants with quotas, offered more work than it can run, under
 *  - admitter:    src/modules/compute/admission.ts (fair share, borrowing, preemption; preempted
 *                 jobs go back to the queue and restart from scratch, the lost work is counted),
 *  - fifo:        global arrival order, no quotas, first-fit, a job that does not fit is skipped,
 *  - fifo-strict: the same, but the oldest job blocks the queue until it fits.
 * Every policy sees the same seeded workload. Args: --seed=N --hours=H --warmup=H --load=X.
 */
import { seededRandom } from '../src/platform/random';
import { Admitter, type Decision, type NodeSpec, type PendingJob, type QuotaSpec } from '../src/modules/compute/admission';
import { latencyStats, percentile, round, type BenchResult } from './harness';

interface Config {
  seed: number;
  /** Simulated time, arrivals included. */
  hours: number;
  /** Measurements start after the cluster has filled up. */
  warmupHours: number;
  /** Offered load as a fraction of cluster capacity. */
  load: number;
  nodes: number;
  gpusPerNode: number;
  sampleEverySec: number;
}
const DEFAULTS: Config = { seed: 42, hours: 24, warmupHours: 3, load: 1.2, nodes: 1000, gpusPerNode: 8, sampleEverySec: 60 };

/** Guarantees sum to the cluster size (8,000 GPUs); limits are twice the guarantee. */
const TENANT_CLASSES = [
  { name: 'large', count: 5, guaranteed: 640 },
  { name: 'medium', count: 15, guaranteed: 240 },
  { name: 'small', count: 30, guaranteed: 40 },
] as const;
type TenantClass = (typeof TENANT_CLASSES)[number]['name'];
/** Demand relative to guarantee, cycled within each class: some tenants idle, some heavy. */
const DEMAND_CYCLE = [0.4, 0.8, 1.2, 1.6, 2.0];
const SIZES = [
  { devices: 1, p: 0.5 },
  { devices: 2, p: 0.25 },
  { devices: 4, p: 0.15 },
  { devices: 8, p: 0.1 },
];
/** Short jobs (minutes) and long ones (hours): shifted exponentials with these minimum and mean. */
const DURATIONS = [
  { p: 0.8, minSec: 60, meanSec: 600 },
  { p: 0.2, minSec: 1800, meanSec: 7200 },
];
/** Every simulated tenant has a quota row; others get nothing. */
const NO_QUOTA = { guaranteed: 0, limit: 0 };

interface Tenant {
  id: string;
  cls: TenantClass;
  guaranteed: number;
  limit: number;
  /** Offered GPUs relative to the guarantee. */
  demand: number;
}
interface SimJob {
  id: string;
  tenant: number;
  devices: number;
  durationSec: number;
  arrivalSec: number;
}
/** What the simulation needs from a scheduling policy (the Admitter has this shape). */
interface Policy {
  enqueue(job: PendingJob): void;
  jobFinished(jobId: string): boolean;
  decide(now: number): Decision;
}

export default async function scheduler(args: string[]): Promise<BenchResult> {
  const cfg = parseArgs(args);
  const tenants = buildTenants(cfg);
  const jobs = buildWorkload(cfg, tenants);
  const nodes: NodeSpec[] = Array.from({ length: cfg.nodes }, (_, i) => ({
    id: `node-${String(i).padStart(4, '0')}`,
    hardware: 'GPU',
    totalDevices: cfg.gpusPerNode,
  }));
  const quotas: QuotaSpec[] = tenants.map((t) => ({ tenantId: t.id, hardware: 'GPU', guaranteed: t.guaranteed, limit: t.limit }));
  const policies: Array<[string, () => Policy]> = [
    ['admitter', () => new Admitter({ nodes, quotas, defaultQuota: { CPU: NO_QUOTA, GPU: NO_QUOTA }, active: [], pending: [] })],
    ['fifo', () => new FifoPolicy(nodes, false)],
    ['fifo-strict', () => new FifoPolicy(nodes, true)],
  ];
  const toRow = rowMaker(cfg, tenants, jobs);
  const rows = policies.map(([name, make]) => toRow({ name, ...simulate(make(), cfg, tenants, jobs) }));
  return { name: 'scheduler', rows, summary: summarise(cfg, jobs, rows) };
}

function parseArgs(args: string[]): Config {
  const cfg = { ...DEFAULTS };
  for (const arg of args) {
    const [, key, value] = /^--(\w+)=(.+)$/.exec(arg) ?? [];
    if (key === 'seed') cfg.seed = Number(value);
    else if (key === 'hours') cfg.hours = Number(value);
    else if (key === 'warmup') cfg.warmupHours = Number(value);
    else if (key === 'load') cfg.load = Number(value);
    else throw new Error(`unknown argument ${arg}; known: --seed= --hours= --warmup= --load=`);
  }
  return cfg;
}

function buildTenants(cfg: Config): Tenant[] {
  const tenants: Tenant[] = [];
  for (const cls of TENANT_CLASSES) {
    for (let i = 0; i < cls.count; i++) {
      const id = `${cls.name}-${String(i).padStart(2, '0')}`;
      tenants.push({ id, cls: cls.name, guaranteed: cls.guaranteed, limit: 2 * cls.guaranteed, demand: DEMAND_CYCLE[i % DEMAND_CYCLE.length] });
    }
  }
  // Scale demands so that the offered load is cfg.load × capacity.
  const offered = tenants.reduce((s, t) => s + t.demand * t.guaranteed, 0);
  const scale = (cfg.load * cfg.nodes * cfg.gpusPerNode) / offered;
  for (const t of tenants) t.demand *= scale;
  return tenants;
}

/** Poisson arrivals per tenant at the rate that offers demand × guarantee GPUs on average. */
function buildWorkload(cfg: Config, tenants: Tenant[]): SimJob[] {
  const rand = seededRandom(cfg.seed);
  const meanDevices = SIZES.reduce((s, x) => s + x.p * x.devices, 0);
  const meanDuration = DURATIONS.reduce((s, x) => s + x.p * x.meanSec, 0);
  const horizon = cfg.hours * 3600;
  const raw: Array<Omit<SimJob, 'id'>> = [];
  tenants.forEach((t, tenant) => {
    const rate = (t.demand * t.guaranteed) / (meanDevices * meanDuration);
    for (let at = exponential(rand, 1 / rate); at < horizon; at += exponential(rand, 1 / rate)) {
      const devices = pick(rand, SIZES).devices;
      const d = pick(rand, DURATIONS);
      raw.push({ tenant, devices, durationSec: d.minSec + exponential(rand, d.meanSec - d.minSec), arrivalSec: at });
    }
  });
  raw.sort((a, b) => a.arrivalSec - b.arrivalSec);
  // Ids in arrival order, zero-padded so that string order is arrival order too.
  return raw.map((j, i) => ({ ...j, id: `j${String(i).padStart(7, '0')}` }));
}

interface SimStats {
  busyGpuSec: number;
  lostGpuSec: number;
  capacityGpuSec: number;
  /** Total queued time per job that arrived in the window (still queued at the end: until then). */
  waits: Float64Array;
  jainMean: number;
  preemptions: number;
  completed: number;
  queuedAtEnd: number;
  /** decide() calls that admitted at least one job: µs per call and per admitted job. */
  callUs: number[];
  perJobUs: number[];
  wallSec: number;
}

/** Runs the workload through one policy; time advances from event to event. */
function simulate(policy: Policy, cfg: Config, tenants: Tenant[], jobs: SimJob[]): SimStats {
  const started = performance.now();
  const horizon = cfg.hours * 3600;
  const warmup = cfg.warmupHours * 3600;
  const capacity = cfg.nodes * cfg.gpusPerNode;
  const n = jobs.length;
  const attempt = new Int32Array(n);
  const startedAt = new Float64Array(n);
  const queuedSince = new Float64Array(n);
  const queuedTotal = new Float64Array(n);
  const queued = new Uint8Array(n);
  const running = new Float64Array(tenants.length);
  const pendingGpus = new Float64Array(tenants.length);
  const completions = new EventHeap();
  const jain: number[] = [];
  const callUs: number[] = [];
  const perJobUs: number[] = [];
  let allocated = 0;
  let busy = 0;
  let lost = 0;
  let preemptions = 0;
  let completed = 0;
  let nextArrival = 0;
  let nextSample = warmup;
  let now = 0;

  const indexOf = (jobId: string) => Number(jobId.slice(1));
  for (;;) {
    const t = Math.min(jobs[nextArrival]?.arrivalSec ?? Infinity, completions.peekTime(), nextSample, horizon);
    busy += allocated * Math.max(0, Math.min(t, horizon) - Math.max(now, warmup));
    now = t;
    if (now >= horizon) break;
    if (now === nextSample) {
      jain.push(jainIndex(tenants, running, pendingGpus, capacity));
      nextSample += cfg.sampleEverySec;
    }
    let changed = false;
    for (; nextArrival < n && jobs[nextArrival].arrivalSec <= now; nextArrival++) {
      const job = jobs[nextArrival];
      policy.enqueue({ id: job.id, tenantId: tenants[job.tenant].id, hardware: 'GPU', devices: job.devices, enqueuedAt: job.arrivalSec });
      queued[nextArrival] = 1;
      queuedSince[nextArrival] = now;
      pendingGpus[job.tenant] += job.devices;
      changed = true;
    }
    while (completions.peekTime() <= now) {
      const [, i, att] = completions.pop();
      if (att !== attempt[i]) continue; // preempted since: this completion was cancelled
      policy.jobFinished(jobs[i].id);
      allocated -= jobs[i].devices;
      running[jobs[i].tenant] -= jobs[i].devices;
      if (now >= warmup) completed++;
      changed = true;
    }
    if (!changed) continue;
    const t0 = process.hrtime.bigint();
    const decision = policy.decide(now);
    const us = Number(process.hrtime.bigint() - t0) / 1000;
    if (decision.admit.length > 0) {
      callUs.push(us);
      perJobUs.push(us / decision.admit.length);
    }
    for (const p of decision.preempt) {
      const i = indexOf(p.jobId);
      const job = jobs[i];
      attempt[i]++;
      allocated -= job.devices;
      running[job.tenant] -= job.devices;
      pendingGpus[job.tenant] += job.devices;
      queued[i] = 1;
      queuedSince[i] = now;
      if (now >= warmup) {
        preemptions++;
        lost += job.devices * (now - Math.max(startedAt[i], warmup));
      }
    }
    for (const a of decision.admit) {
      const i = indexOf(a.jobId);
      const job = jobs[i];
      queued[i] = 0;
      queuedTotal[i] += now - queuedSince[i];
      startedAt[i] = now;
      allocated += job.devices;
      running[job.tenant] += job.devices;
      pendingGpus[job.tenant] -= job.devices;
      completions.push(now + job.durationSec, i, attempt[i]);
    }
  }
  const waits = new Float64Array(n);
  for (let i = 0; i < n; i++) waits[i] = queuedTotal[i] + (queued[i] ? horizon - queuedSince[i] : 0);
  return {
    busyGpuSec: busy,
    lostGpuSec: lost,
    capacityGpuSec: capacity * (horizon - warmup),
    waits,
    jainMean: mean(jain),
    preemptions,
    completed,
    queuedAtEnd: queued.reduce((s, q) => s + q, 0),
    callUs,
    perJobUs,
    wallSec: (performance.now() - started) / 1000,
  };
}

/**
 * Fairness at one instant: Jain's index (Σx)²/(n·Σx²) over the tenants with demand (running +
 * queued GPUs > 0) of x_i = running_i / fair_i, where fair_i is the weighted max-min fair share:
 * capacity water-filled in proportion to guarantees, each tenant capped by its demand. So 1.0
 * means every tenant gets its entitlement: its demand if under it, else its guarantee-weighted
 * share of what the under-demand tenants leave over. Borrowing idle capacity is not penalised.
 */
function jainIndex(tenants: Tenant[], running: Float64Array, pending: Float64Array, capacity: number): number {
  const withDemand = tenants.map((t, i) => ({ i, g: t.guaranteed, demand: running[i] + pending[i] })).filter((t) => t.demand > 0);
  if (withDemand.length === 0) return 1;
  const fair = waterFill(withDemand, capacity);
  let sum = 0;
  let sumSq = 0;
  withDemand.forEach((t, k) => {
    const x = running[t.i] / fair[k];
    sum += x;
    sumSq += x * x;
  });
  return sumSq === 0 ? 1 : (sum * sum) / (withDemand.length * sumSq);
}

/** Weighted max-min fair allocation of capacity (weights g, caps demand). */
function waterFill(tenants: Array<{ g: number; demand: number }>, capacity: number): number[] {
  const totalDemand = tenants.reduce((s, t) => s + t.demand, 0);
  if (totalDemand <= capacity) return tenants.map((t) => t.demand);
  const order = tenants.map((_, k) => k).sort((a, b) => tenants[a].demand / tenants[a].g - tenants[b].demand / tenants[b].g);
  const fair = new Array<number>(tenants.length);
  let left = capacity;
  let weight = tenants.reduce((s, t) => s + t.g, 0);
  for (const k of order) {
    const level = left / weight;
    fair[k] = Math.min(tenants[k].demand, level * tenants[k].g);
    left -= fair[k];
    weight -= tenants[k].g;
  }
  return fair;
}

/**
 * Baseline: one queue in arrival order, no quotas, first-fit (lowest node id with room). Not
 * strict: the oldest job of every size that fits goes first, i.e. the oldest job that fits.
 * Strict: the oldest job blocks everything behind it until it fits.
 */
class FifoPolicy implements Policy {
  private readonly free: Int32Array;
  /** Nodes per free-device count, for the largest free block in O(devices per node). */
  private readonly nodesWithFree: Int32Array;
  private readonly queues = new Map<number, Queue<PendingJob>>();
  private readonly placed = new Map<string, { node: number; devices: number }>();

  constructor(
    private readonly nodes: NodeSpec[],
    private readonly strict: boolean,
  ) {
    this.free = Int32Array.from(nodes, (n) => n.totalDevices);
    this.nodesWithFree = new Int32Array(Math.max(...nodes.map((n) => n.totalDevices)) + 1);
    for (const n of nodes) this.nodesWithFree[n.totalDevices]++;
  }

  enqueue(job: PendingJob): void {
    let q = this.queues.get(job.devices);
    if (!q) this.queues.set(job.devices, (q = new Queue()));
    q.push(job);
  }

  jobFinished(jobId: string): boolean {
    const p = this.placed.get(jobId);
    if (!p) return false;
    this.placed.delete(jobId);
    this.take(p.node, -p.devices);
    return true;
  }

  decide(): Decision {
    const admit: Decision['admit'] = [];
    for (;;) {
      const job = this.next();
      if (!job) return { admit, preempt: [] };
      const node = this.free.findIndex((f) => f >= job.devices);
      this.queues.get(job.devices)!.shift();
      this.take(node, job.devices);
      this.placed.set(job.id, { node, devices: job.devices });
      admit.push({ jobId: job.id, nodeId: this.nodes[node].id, borrowed: false });
    }
  }

  /** The job to place next, if it fits somewhere. */
  private next(): PendingJob | undefined {
    const maxFree = this.maxFree();
    let best: PendingJob | undefined;
    for (const [devices, q] of this.queues) {
      const head = q.peek();
      if (!head || (!this.strict && devices > maxFree)) continue;
      if (!best || head.enqueuedAt < best.enqueuedAt || (head.enqueuedAt === best.enqueuedAt && head.id < best.id)) best = head;
    }
    return best && best.devices <= maxFree ? best : undefined;
  }

  private maxFree(): number {
    for (let f = this.nodesWithFree.length - 1; f > 0; f--) if (this.nodesWithFree[f] > 0) return f;
    return 0;
  }

  private take(node: number, devices: number): void {
    this.nodesWithFree[this.free[node]]--;
    this.free[node] -= devices;
    this.nodesWithFree[this.free[node]]++;
  }
}

/** Array-backed FIFO queue with O(1) shift. */
class Queue<T> {
  private items: T[] = [];
  private head = 0;

  push(item: T): void {
    this.items.push(item);
  }

  peek(): T | undefined {
    return this.items[this.head];
  }

  shift(): void {
    this.head++;
    if (this.head > 1024 && this.head * 2 > this.items.length) {
      this.items = this.items.slice(this.head);
      this.head = 0;
    }
  }
}

/** Min-heap of [time, job index, attempt] completion events. */
class EventHeap {
  private readonly items: Array<[number, number, number]> = [];

  peekTime(): number {
    return this.items.length > 0 ? this.items[0][0] : Infinity;
  }

  push(time: number, job: number, attempt: number): void {
    const items = this.items;
    let i = items.push([time, job, attempt]) - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (items[parent][0] <= items[i][0]) break;
      [items[i], items[parent]] = [items[parent], items[i]];
      i = parent;
    }
  }

  pop(): [number, number, number] {
    const items = this.items;
    const top = items[0];
    const last = items.pop()!;
    if (items.length === 0) return top;
    items[0] = last;
    for (let i = 0; ; ) {
      const l = 2 * i + 1;
      const r = l + 1;
      let m = i;
      if (l < items.length && items[l][0] < items[m][0]) m = l;
      if (r < items.length && items[r][0] < items[m][0]) m = r;
      if (m === i) return top;
      [items[i], items[m]] = [items[m], items[i]];
      i = m;
    }
  }
}

type PolicyStats = SimStats & { name: string };

/** Queue waits in minutes of the jobs that arrived in the measured window and pass `keep`. */
function waitPercentiles(s: PolicyStats, jobs: SimJob[], warmupSec: number, keep: (j: SimJob) => boolean) {
  const w: number[] = [];
  jobs.forEach((j, i) => {
    if (j.arrivalSec >= warmupSec && keep(j)) w.push(s.waits[i] / 60);
  });
  w.sort((a, b) => a - b);
  return { p50: round(percentile(w, 50), 1), p99: round(percentile(w, 99), 1) };
}

function rowMaker(cfg: Config, tenants: Tenant[], jobs: SimJob[]) {
  const warmup = cfg.warmupHours * 3600;
  return (s: PolicyStats): Row => {
    const row: Row = {
      policy: s.name,
      util_pct: round((100 * s.busyGpuSec) / s.capacityGpuSec, 1),
      goodput_pct: round((100 * (s.busyGpuSec - s.lostGpuSec)) / s.capacityGpuSec, 1),
      util_of_offered_pct: round((100 * s.busyGpuSec) / s.capacityGpuSec / Math.min(1, offeredLoad(cfg, jobs)), 1),
    };
    for (const cls of TENANT_CLASSES) {
      const w = waitPercentiles(s, jobs, warmup, (j) => tenants[j.tenant].cls === cls.name);
      row[`wait_p50_min_${cls.name}`] = w.p50;
      row[`wait_p99_min_${cls.name}`] = w.p99;
    }
    // Tenants offering less than their guarantee: what isolation is for.
    const under = waitPercentiles(s, jobs, warmup, (j) => tenants[j.tenant].demand < 1);
    row.wait_p50_min_under_guarantee = under.p50;
    row.wait_p99_min_under_guarantee = under.p99;
    // Whole-node jobs: where skipping jobs that do not fit costs (starvation is out of scope).
    const whole = waitPercentiles(s, jobs, warmup, (j) => j.devices === cfg.gpusPerNode);
    row.wait_p50_min_whole_node = whole.p50;
    row.wait_p99_min_whole_node = whole.p99;
    row.jain = round(s.jainMean, 3);
    row.preemptions = s.preemptions;
    row.lost_gpu_h = round(s.lostGpuSec / 3600, 1);
    row.completed = s.completed;
    row.queued_at_end = s.queuedAtEnd;
    const call = latencyStats(s.callUs);
    const perJob = latencyStats(s.perJobUs);
    row.decide_calls = call.n;
    row.decide_mean_us = round(call.mean, 1);
    row.decide_p99_us = round(call.p99, 1);
    row.per_job_mean_us = round(perJob.mean, 1);
    row.per_job_p99_us = round(perJob.p99, 1);
    row.sim_wall_s = round(s.wallSec, 1);
    return row;
  };
}

/** Offered GPU-seconds of the jobs arriving in the window over the window's capacity. */
function offeredLoad(cfg: Config, jobs: SimJob[]): number {
  const warmup = cfg.warmupHours * 3600;
  const work = jobs.reduce((s, j) => s + (j.arrivalSec >= warmup ? j.devices * j.durationSec : 0), 0);
  return work / (cfg.nodes * cfg.gpusPerNode * (cfg.hours * 3600 - warmup));
}

type Row = Record<string, string | number>;

/** Targets (for the admitter) with pass/fail, and admitter/fifo ratios. */
function summarise(cfg: Config, jobs: SimJob[], rows: Row[]): Record<string, unknown> {
  const byName = (name: string) => rows.find((r) => r.policy === name)!;
  const admitter = byName('admitter');
  const fifo = byName('fifo');
  const num = (r: Row, key: string) => Number(r[key]);
  const ratio = (key: string) => round(num(admitter, key) / num(fifo, key), 3);
  const offered = offeredLoad(cfg, jobs);
  const targets = {
    utilisationOfOfferedPct: { target: '>= 95', value: num(admitter, 'util_of_offered_pct'), pass: num(admitter, 'util_of_offered_pct') >= 95 },
    goodputOfOfferedPct: {
      target: '>= 95 (informational: utilisation minus work lost to preemption)',
      value: round(num(admitter, 'goodput_pct') / Math.min(1, offered), 1),
      pass: num(admitter, 'goodput_pct') / Math.min(1, offered) >= 95,
    },
    jainFairness: { target: '>= 0.95', value: num(admitter, 'jain'), pass: num(admitter, 'jain') >= 0.95 },
    decideMeanUs: { target: '< 1000', value: num(admitter, 'decide_mean_us'), pass: num(admitter, 'decide_mean_us') < 1000 },
    decideP99Us: { target: '< 1000', value: num(admitter, 'decide_p99_us'), pass: num(admitter, 'decide_p99_us') < 1000 },
  };
  return {
    config: { ...cfg, tenants: TENANT_CLASSES.reduce((s, c) => s + c.count, 0), jobs: jobs.length, offeredLoad: round(offered, 3) },
    fairness:
      'mean over 1-min samples of Jain((running_i / fair_i)) over tenants with running+queued GPUs > 0, ' +
      'fair_i = capacity water-filled by guarantee, capped by demand (weighted max-min)',
    waits: 'total queued minutes per job arrived after warm-up, jobs still queued at the end counted until then',
    notes: [
      'admitter idle GPUs are fragmentation holes: small jobs never queue under it, so only 4- and 8-GPU jobs are left to fill them',
      'whole-node jobs of tenants above their guarantee can starve behind small jobs (no reservation/backfill; out of scope)',
    ],
    targets,
    allTargetsMet: Object.entries(targets).every(([key, t]) => key === 'goodputOfOfferedPct' || t.pass),
    admitterVsFifo: {
      utilisation: ratio('util_pct'),
      goodput: ratio('goodput_pct'),
      jain: ratio('jain'),
      waitP99UnderGuarantee: ratio('wait_p99_min_under_guarantee'),
      waitP99Small: ratio('wait_p99_min_small'),
      completed: ratio('completed'),
    },
  };
}

const mean = (xs: number[]) => xs.reduce((s, x) => s + x, 0) / (xs.length || 1);


function exponential(rand: () => number, mean: number): number {
  return -Math.log(1 - rand()) * mean;
}

function pick<T extends { p: number }>(rand: () => number, options: readonly T[]): T {
  let u = rand();
  for (const o of options) if ((u -= o.p) < 0) return o;
  return options[options.length - 1];
}
