import type { ArtifactStore } from '../../../src/modules/training/artifact-store';
import { resolveInput } from './inputs';
import { compiledSibling } from './paths';
import { ThreadPool } from './pool';
import { artifactStore } from './training/store';
import { RUNTIMES, runTimed, runtimeFor } from './registry';
import { canceled, RuntimeError, type JobContext, type RunResult, type RuntimeHost } from './types';

export * from './types';
export { compiledSibling, modulePath } from './paths';

export interface RuntimeHostOptions {
  /** Worker threads for model inference (default 2). */
  threads?: number;
  /** Services this host serves (default: all). */
  services?: string[];
  /** Where stored input images (`image: { ref }`) are read (default: this process's, from DATA_DIR / S3_*). */
  store?: ArtifactStore;
  /** Longest an inference job may run on a worker thread (default INFERENCE_MAX_RUN_MS); training trials keep TRAINING_MAX_RUN_MS. */
  maxRunMs?: number;
  /** How long a stopped job's thread may take to stop before it is terminated (default STOP_GRACE_MS). */
  stopGraceMs?: number;
}

/**
 * Past these, a job on a worker thread fails RUN_TIMEOUT and its thread is terminated (a job that
 * hangs, or whose library stopped answering, would otherwise hold its thread for good). Inference:
 * 10 min, the longest system.echo may be asked to sleep (sleepMs max 600,000) and far above any
 * model's run. Training trials run as long as their search allows: the orchestrator cancels them
 * once the training job's maxMinutes is spent (at most 24 h, training.service.ts), which now stops
 * them; this is only a backstop for a cancel that never arrives, so it is never below a budget.
 * Inline services (echo, franc, short wink texts) run on the calling thread and have no limit:
 * echo's sleep ends on cancel, the others take milliseconds.
 */
export const INFERENCE_MAX_RUN_MS = 10 * 60_000;
export const TRAINING_MAX_RUN_MS = 24 * 60 * 60_000;

export function maxRunMsFor(serviceId: string, opts: Pick<RuntimeHostOptions, 'maxRunMs'> = {}): number {
  return /^training(\.|$)/.test(serviceId) ? TRAINING_MAX_RUN_MS : (opts.maxRunMs ?? INFERENCE_MAX_RUN_MS);
}

/**
 * Where each service runs. Measured on 2 cores: franc takes 0.3-1.5 ms (it reads at most 2,048
 * characters) and wink sentiment/keywords ~0.25 ms per 1,000 characters, below the cost of a
 * thread hop, so they run on the calling thread. Longer texts, entity extraction (compromise,
 * 3-30 ms), vision, OCR and forecasting go to the worker threads.
 */
const ALWAYS_INLINE = new Set(['system.echo', 'language.detect-language']);
const INLINE_WHEN_SHORT = new Set(['language.sentiment', 'language.keywords']);
export const INLINE_TEXT_MAX_CHARS = 4_000;

export function runsInline(serviceId: string, input: unknown): boolean {
  if (ALWAYS_INLINE.has(serviceId)) return true;
  if (!INLINE_WHEN_SHORT.has(serviceId)) return false;
  const text = (input as { text?: unknown } | null)?.text;
  return typeof text === 'string' && text.length <= INLINE_TEXT_MAX_CHARS;
}

export function createRuntimeHost(opts: RuntimeHostOptions = {}): RuntimeHost {
  const served = new Set(opts.services ?? Object.keys(RUNTIMES));
  for (const id of served) runtimeFor(id); // unknown ids fail fast
  const pool = new ThreadPool(compiledSibling(__filename, 'thread'), Math.max(1, opts.threads ?? 2), opts.stopGraceMs);
  const store = () => opts.store ?? artifactStore();
  let closed = false;

  async function run(serviceId: string, input: unknown, ctx: JobContext): Promise<RunResult> {
    if (closed) throw new RuntimeError('HOST_CLOSED', 'runtime host is closed');
    if (!served.has(serviceId)) throw new RuntimeError('UNKNOWN_SERVICE', `this node does not serve ${serviceId}`);
    if (ctx.signal.aborted) throw canceled();
    // A stored input image is read here, on the host's thread, and moved (not copied) to the worker thread.
    const { input: resolved, transfer } = await resolveInput(input, store, ctx.tenantId);
    if (ctx.signal.aborted) throw canceled();
    if (runsInline(serviceId, resolved)) {
      const r = await runTimed(serviceId, resolved, ctx);
      return { output: r.output, metrics: { loadMs: r.loadMs, runMs: r.runMs, queueMs: 0 } };
    }
    const r = await pool.run(serviceId, resolved, ctx, { transfer, maxRunMs: maxRunMsFor(serviceId, opts) });
    return { output: r.output, metrics: { loadMs: r.loadMs, runMs: r.runMs, queueMs: r.queueMs } };
  }

  async function warm(serviceIds?: string[]): Promise<void> {
    const ids = (serviceIds ?? [...served]).filter((id) => served.has(id));
    const inline = ids.filter((id) => ALWAYS_INLINE.has(id) || INLINE_WHEN_SHORT.has(id));
    for (const id of inline) {
      const r = runtimeFor(id);
      if (!r.isLoaded()) await r.load();
    }
    const threaded = ids.filter((id) => !ALWAYS_INLINE.has(id) && !INLINE_WHEN_SHORT.has(id));
    if (threaded.length) await pool.warm(threaded);
  }

  async function close(): Promise<void> {
    closed = true;
    await pool.close(); // terminating a thread also ends its nested tesseract worker
  }

  return { run, warm, close };
}
