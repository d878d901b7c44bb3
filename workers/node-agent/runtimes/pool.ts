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

export interface PoolRunOptions {
  /** ArrayBuffers inside `input` the thread takes over (detached here once posted). */
  transfer?: ArrayBuffer[];
  /**
   * Longest the job may run once on a thread (loading its models included, queueing not): past
   * it, it fails RUN_TIMEOUT and its thread is stopped like a cancelled job's (see STOP_GRACE_MS).
   * No limit when omitted.
   */
  maxRunMs?: number;
}

/**
 * How long the thread of a cancelled or timed-out job may take to stop on its own after being told
 * to (`cancel`). A job that awaits (echo, tfjs between kernels, training between steps) stops within
 * milliseconds and keeps its thread and warm models. Synchronous work (compromise, the forecasters,
 * sharp or tfjs inside one call) does not read the message until it ends, and tesseract ignores the
 * signal altogether: past this grace the thread is terminated and a fresh one (cold: it loads its
 * models again) replaces it. So a job queued behind a stopped one waits at most about this long.
 * 3 s lets a job that ignores the signal but ends soon anyway (a face detection, ~1 s on 2 shared
 * cores; the agent cancels a speculatively started inference whose job was cancelled in the
 * queue) finish instead of being terminated near its end and its replacement reloading the models.
 */
export const STOP_GRACE_MS = 3_000;
/** setTimeout's largest delay; longer limits would fire at once, so they are not armed. */
const MAX_TIMER_MS = 2 ** 31 - 1;

type WarmResult = Array<{ serviceId: string; message: string }>;

interface Job {
  id: number;
  serviceId: string;
  input: unknown;
  /** Buffers of `input` moved to the thread rather than copied (each job is posted once). */
  transfer: ArrayBuffer[];
  ctx: JobContext;
  maxRunMs?: number;
  queuedAt: number;
  startedAt?: number;
  settled: boolean;
  resolve(r: PoolResult): void;
  reject(e: Error): void;
  onAbort?: () => void;
  /** Fails the job RUN_TIMEOUT once it has run maxRunMs. */
  runTimer?: NodeJS.Timeout;
}

interface Slot {
  worker: Worker;
  /**
   * The job the thread is running. A job that was answered early (cancelled, timed out) stays
   * here until the thread says it stopped, or is terminated: the thread is busy until then.
   */
  job: Job | null;
  warm: Set<string>;
  warmWaiters: Map<number, { serviceIds: string[]; resolve: (failed: WarmResult) => void }>;
  /** Jobs and warm-ups in flight: the thread keeps the process alive only while this is > 0. */
  pending: number;
  /** Armed when its job was stopped: terminates the thread if it still runs it after STOP_GRACE_MS. */
  stopTimer?: NodeJS.Timeout;
}

/**
 * A fixed-size pool of worker threads, one job per thread at a time (wasm inference is
 * single-core). Jobs queue in FIFO order; a thread that already holds the service's model is
 * preferred. Threads start on first need and stay, keeping their models warm, unless a job they
 * were told to stop (cancelled, or past its maxRunMs) keeps them busy: see STOP_GRACE_MS.
 */
export class ThreadPool {
  private readonly slots: Slot[] = [];
  private readonly queue: Job[] = [];
  private nextId = 1;
  private closed = false;

  constructor(
    private readonly file: string,
    private readonly size: number,
    private readonly stopGraceMs = STOP_GRACE_MS,
  ) {}

  run(serviceId: string, input: unknown, ctx: JobContext, opts: PoolRunOptions = {}): Promise<PoolResult> {
    if (this.closed) return Promise.reject(new RuntimeError('HOST_CLOSED', 'runtime host is closed'));
    if (ctx.signal.aborted) return Promise.reject(canceled());
    return new Promise<PoolResult>((resolve, reject) => {
      const job: Job = {
        id: this.nextId++, serviceId, input, transfer: opts.transfer ?? [], ctx, maxRunMs: opts.maxRunMs, queuedAt: performance.now(), settled: false, resolve, reject,
      };
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
    for (const s of slots) {
      clearTimeout(s.stopTimer);
      if (s.job) this.settle(s.job, new RuntimeError('HOST_CLOSED', 'runtime host closed'));
    }
    await Promise.all(slots.map((s) => s.worker.terminate()));
  }

  private warmSlot(slot: Slot, serviceIds: string[]) {
    return new Promise<WarmResult>((resolve) => this.postWarm(slot, serviceIds, resolve));
  }

  private postWarm(slot: Slot, serviceIds: string[], resolve: (failed: WarmResult) => void) {
    const id = this.nextId++;
    slot.warmWaiters.set(id, { serviceIds, resolve });
    this.hold(slot, 1);
    this.post(slot, { type: 'warm', id, serviceIds });
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
      const limit = job.maxRunMs;
      if (limit !== undefined && limit > 0 && limit <= MAX_TIMER_MS) {
        job.runTimer = setTimeout(() => this.timeOut(job, limit), limit);
        job.runTimer.unref(); // the busy thread holds the process meanwhile
      }
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
        waiter.resolve(m.failed);
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
      // The thread is done with it (a stopped job's answer only frees the thread: it was settled already).
      slot.job = null;
      clearTimeout(slot.stopTimer);
      slot.stopTimer = undefined;
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

  /**
   * A crashed thread fails its job and its warm-ups; a fresh thread replaces it on the next
   * dispatch. The 'exit' of a thread this pool terminated itself (`retire`) finds it gone already.
   */
  private onCrash(slot: Slot, err: Error): void {
    if (!this.remove(slot)) return;
    for (const w of slot.warmWaiters.values()) w.resolve([{ serviceId: '*', message: err.message }]);
    if (slot.job) this.settle(slot.job, new RuntimeError('MODEL_ERROR', `worker thread failed: ${err.message}`));
    if (!this.closed) this.dispatch();
  }

  /**
   * Terminates a thread that did not stop its (already answered) job in time. Its job is not
   * answered again. Warm-ups it had not done move to a fresh thread, which starts cold: the models
   * the terminated thread held are gone with it, and `warm` is per thread. Queued jobs then go to
   * the fresh thread.
   */
  private retire(slot: Slot): void {
    if (!this.remove(slot)) return;
    const warmUps = [...slot.warmWaiters.values()];
    if (warmUps.length && !this.closed) {
      try {
        const fresh = this.spawn();
        for (const w of warmUps) this.postWarm(fresh, w.serviceIds, w.resolve);
      } catch (err) {
        for (const w of warmUps) w.resolve([{ serviceId: '*', message: (err as Error).message }]);
      }
    } else {
      for (const w of warmUps) w.resolve([{ serviceId: '*', message: 'worker thread terminated' }]);
    }
    if (!this.closed) this.dispatch();
  }

  /** Takes the thread out of the pool and terminates it; false when it was out already. */
  private remove(slot: Slot): boolean {
    const i = this.slots.indexOf(slot);
    if (i < 0) return false;
    this.slots.splice(i, 1);
    clearTimeout(slot.stopTimer);
    slot.stopTimer = undefined;
    void slot.worker.terminate();
    return true;
  }

  /** Queued jobs leave the queue; a running job is answered at once and its thread stopped. */
  private abort(job: Job): void {
    if (job.settled) return;
    const q = this.queue.indexOf(job);
    if (q >= 0) this.queue.splice(q, 1);
    this.settle(job, canceled());
    const slot = this.slots.find((s) => s.job === job);
    if (slot) this.stop(slot, job);
  }

  private timeOut(job: Job, limit: number): void {
    const slot = this.slots.find((s) => s.job === job);
    if (job.settled || !slot) return;
    this.settle(job, new RuntimeError('RUN_TIMEOUT', `${job.serviceId} ran past its maximum run time of ${limit} ms and was stopped`));
    this.stop(slot, job);
  }

  /**
   * Tells the thread to stop `job` (settled already), and terminates it if it still runs it after
   * STOP_GRACE_MS: its answer, should one come later, is dropped with the thread.
   */
  private stop(slot: Slot, job: Job): void {
    this.post(slot, { type: 'cancel', id: job.id });
    if (slot.stopTimer) return;
    slot.stopTimer = setTimeout(() => {
      slot.stopTimer = undefined;
      if (slot.job === job) this.retire(slot);
    }, this.stopGraceMs);
    slot.stopTimer.unref(); // the busy thread holds the process meanwhile
  }

  private settle(job: Job, err: Error | null, result?: PoolResult): void {
    if (job.settled) return;
    job.settled = true;
    clearTimeout(job.runTimer);
    if (job.onAbort) job.ctx.signal.removeEventListener('abort', job.onAbort);
    if (err) job.reject(err);
    else job.resolve(result as PoolResult);
  }
}
