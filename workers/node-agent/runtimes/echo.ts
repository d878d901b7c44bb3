import { canceled, RuntimeError, type JobContext } from './types';

export interface EchoInput {
  message?: unknown;
  sleepMs?: number;
  progressSteps?: number;
  fail?: boolean;
}

/** Resolves after `ms`, or rejects with CANCELED as soon as the signal aborts. */
export function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal.aborted) return reject(canceled());
    const onAbort = () => {
      clearTimeout(timer);
      reject(canceled());
    };
    const timer = setTimeout(() => {
      signal.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal.addEventListener('abort', onAbort, { once: true });
  });
}

/** system.echo: sleeps in even progress steps, then echoes or fails on request. */
export async function echo(input: EchoInput, ctx: JobContext): Promise<{ message: unknown }> {
  const total = input.sleepMs ?? 0;
  const steps = input.progressSteps ?? 1;
  if (ctx.signal.aborted) throw canceled();
  for (let k = 1; k <= steps; k++) {
    // Cumulative targets keep the total exact despite rounding.
    const due = Math.round((total * k) / steps) - Math.round((total * (k - 1)) / steps);
    if (due > 0) await sleep(due, ctx.signal);
    if (input.progressSteps) ctx.reportProgress(k / steps);
  }
  if (input.fail) throw new RuntimeError('JOB_FAILED', 'echo failed on request (fail: true)');
  return { message: input.message ?? null };
}
