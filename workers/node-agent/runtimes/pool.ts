import { existsSync } from 'node:fs';
import { Worker } from 'node:worker_threads';
import type { FromThread, ToThread } from './protocol';
import { canceled, RuntimeError, type JobContext } from './types';

export interface PoolResult {
  output: unknown;
  loadMs: number;
  runMs: number;
  queueMs: number;
}

interface Job {
  id: number;
  serviceId: string;
  input: unknown;
  /** Buffers of `input` moved to the thread rather than copied (each job is posted once). */
  transfer: ArrayBuffer[];
  ctx: JobContext;
  queuedAt: number;
  startedAt?: number;
  settled: boolean;
  resolve(r: PoolResult): void;
  reject(e: Error): void;
  onAbort?: () => void;
}

interface Slot {
  worker: Worker;
  job: Job | null;
  warm: Set<string>;
  warmWaiters: Map<number, (failed: Array<{ serviceId: string; message: string }>) => void>;
  /** Jobs and warm-ups in flight: the thread keeps the process alive only while this is > 0. */
  pending: number;
}

/**
 * A fixed-size pool of worker threads, one job per thread at a time (wasm inference is
 * single-core). Jobs queue in FIFO order; a thread that already holds the service's model is
 * preferred. Threads start on first need and stay, keeping their models warm.
 */
export class ThreadPool {
  private readonly slots: Slot[] = [];
  private readonly queue: Job[] = [];
  private nextId = 1;
  private closed = false;

  constructor(
    private readonly file: string,
    private readonly size: number,
  ) {}

  /** `transfer`: ArrayBuffers inside `input` the thread takes over (detached here once posted). */
  run(serviceId: string, input: unknown, ctx: JobContext, transfer: ArrayBuffer[] = []): Promise<PoolResult> {
    if (this.closed) return Promise.reject(new RuntimeError('HOST_CLOSED', 'runtime host is closed'));
    if (ctx.signal.aborted) return Promise.reject(canceled());
    return new Promise<PoolResult>((resolve, reject) => {
      const job: Job = { id: this.nextId++, serviceId, input, transfer, ctx, queuedAt: performance.now(), settled: false, resolve, reject };
      job.onAbort = () => this.abort(job);
      ctx.signal.addEventListener('abort', job.onAbort, { once: true });
      this.queue.push(job);
      this.dispatch();
    });
  }

  /** Starts every thread and loads the models of `serviceIds` in each. */
  async warm(serviceIds: string[]): Promise<void> {
    while (!this.closed && this.slots.length < this.size) this.spawn();
    const failures = await Promise.all(this.slots.map((slot) => this.warmSlot(slot, serviceIds)));
    const failed = failures.flat();
    if (failed.length) throw new RuntimeError('MODEL_ERROR', `warm-up failed: ${failed.map((f) => `${f.serviceId}: ${f.message}`).join('; ')}`);
  }

  async close(): Promise<void> {
    this.closed = true;
    for (const job of this.queue.splice(0)) this.settle(job, new RuntimeError('HOST_CLOSED', 'runtime host closed'));
    const slots = this.slots.splice(0);
    for (const s of slots) if (s.job) this.settle(s.job, new RuntimeError('HOST_CLOSED', 'runtime host closed'));
    await Promise.all(slots.map((s) => s.worker.terminate()));
  }

  private warmSlot(slot: Slot, serviceIds: string[]) {
    return new Promise<Array<{ serviceId: string; message: string }>>((resolve) => {
      const id = this.nextId++;
      slot.warmWaiters.set(id, resolve);
      this.hold(slot, 1);
      this.post(slot, { type: 'warm', id, serviceIds });
    });
  }

  private spawn(): Slot {
    if (!existsSync(this.file)) {
      throw new RuntimeError('MODEL_ERROR', `worker thread script ${this.file} is missing: build dist/ first (npm run -s build)`);
    }
    const worker = new Worker(this.file);
    const slot: Slot = { worker, job: null, warm: new Set(), warmWaiters: new Map(), pending: 0 };
    worker.on('message', (m: FromThread) => this.onMessage(slot, m));
    worker.on('error', (err) => this.onCrash(slot, err));
    worker.on('exit', (code) => this.onCrash(slot, new Error(`worker thread exited with code ${code}`)));
    worker.unref();
    this.slots.push(slot);
    return slot;
  }

  /** Idle threads are unref'd so a forgotten host does not keep the process alive. */
  private hold(slot: Slot, delta: number) {
    slot.pending += delta;
    if (slot.pending > 0) slot.worker.ref();
    else slot.worker.unref();
  }

  private post(slot: Slot, m: ToThread, transfer: ArrayBuffer[] = []) {
    slot.worker.postMessage(m, transfer);
  }

  private dispatch(): void {
    while (this.queue.length > 0) {
      const job = this.queue[0] as Job;
      const idle = this.slots.filter((s) => !s.job);
      let slot = idle.find((s) => s.warm.has(job.serviceId)) ?? idle[0];
      if (!slot && this.slots.length < this.size) {
        try {
          slot = this.spawn();
        } catch (err) {
          for (const j of this.queue.splice(0)) this.settle(j, err as Error);
          return;
        }
      }
      if (!slot) return;
      this.queue.shift();
      slot.job = job;
      job.startedAt = performance.now();
      this.hold(slot, 1);
      this.post(slot, { type: 'run', id: job.id, serviceId: job.serviceId, input: job.input }, job.transfer);
    }
  }

  private onMessage(slot: Slot, m: FromThread): void {
    if (m.type === 'warmed') {
      for (const s of m.loaded) slot.warm.add(s);
      const waiter = slot.warmWaiters.get(m.id);
      if (waiter) {
        slot.warmWaiters.delete(m.id);
        this.hold(slot, -1);
        waiter(m.failed);
      }
      return;
    }
    if (m.type === 'ready') return;
    const job = slot.job;
    if (!job || job.id !== m.id) return;
    if (m.type === 'progress') {
      if (!job.settled) job.ctx.reportProgress(m.fraction);
    } else if (m.type === 'log') {
      if (!job.settled) job.ctx.log(m.line);
    } else {
      slot.job = null;
      this.hold(slot, -1);
      if (m.type === 'result') {
        slot.warm.add(job.serviceId);
        const queueMs = Math.round(((job.startedAt ?? job.queuedAt) - job.queuedAt) * 100) / 100;
        this.settle(job, null, { output: m.output, loadMs: m.loadMs, runMs: m.runMs, queueMs });
      } else {
        this.settle(job, new RuntimeError(m.code, m.message));
      }
      this.dispatch();
    }
  }

  /** A crashed thread fails its job; a fresh thread replaces it on the next dispatch. */
  private onCrash(slot: Slot, err: Error): void {
    const i = this.slots.indexOf(slot);
    if (i < 0) return;
    this.slots.splice(i, 1);
    for (const resolve of slot.warmWaiters.values()) resolve([{ serviceId: '*', message: err.message }]);
    if (slot.job) this.settle(slot.job, new RuntimeError('MODEL_ERROR', `worker thread failed: ${err.message}`));
    void slot.worker.terminate();
    if (!this.closed) this.dispatch();
  }

  /** Queued jobs leave the queue; a running job is answered at once and its thread told to stop. */
  private abort(job: Job): void {
    if (job.settled) return;
    const q = this.queue.indexOf(job);
    if (q >= 0) this.queue.splice(q, 1);
    const slot = this.slots.find((s) => s.job === job);
    if (slot) this.post(slot, { type: 'cancel', id: job.id });
    this.settle(job, canceled());
  }

  private settle(job: Job, err: Error | null, result?: PoolResult): void {
    if (job.settled) return;
    job.settled = true;
    if (job.onAbort) job.ctx.signal.removeEventListener('abort', job.onAbort);
    if (err) job.reject(err);
    else job.resolve(result as PoolResult);
  }
}
