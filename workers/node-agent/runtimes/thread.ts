import { parentPort } from 'node:worker_threads';
import type { FromThread, ToThread } from './protocol';
import { runTimed, runtimeFor } from './registry';
import { RuntimeError, type JobContext } from './types';

/**
 * Worker-thread entry: runs one job at a time for the host, loading models lazily and keeping
 * them. Compiled to dist/workers/node-agent/runtimes/thread.js (see paths.ts).
 */
const port = parentPort;
if (!port) throw new Error('thread.ts must run as a worker thread');

const post = (m: FromThread) => port.postMessage(m);
const controllers = new Map<number, AbortController>();
/**
 * Progress crosses to the host at most this often per job (the agent forwards it at most every
 * 200 ms): a model that reports each percent (tesseract does) would otherwise post a message per
 * step while its inference competes for the same cores.
 */
const PROGRESS_POST_MS = 50;

async function run(id: number, serviceId: string, input: unknown): Promise<void> {
  const controller = new AbortController();
  controllers.set(id, controller);
  let lastProgressAt = -Infinity;
  const ctx: JobContext = {
    signal: controller.signal,
    reportProgress: (fraction) => {
      const now = performance.now();
      if (now - lastProgressAt < PROGRESS_POST_MS && fraction < 1) return;
      lastProgressAt = now;
      post({ type: 'progress', id, fraction });
    },
    log: (line) => post({ type: 'log', id, line }),
  };
  try {
    const { output, loadMs, runMs } = await runTimed(serviceId, input, ctx);
    post({ type: 'result', id, output, loadMs, runMs });
  } catch (err) {
    const code = err instanceof RuntimeError ? err.code : 'MODEL_ERROR';
    post({ type: 'error', id, code, message: (err as Error).message ?? String(err) });
  } finally {
    controllers.delete(id);
  }
}

async function warm(id: number, serviceIds: string[]): Promise<void> {
  const loaded: string[] = [];
  const failed: Array<{ serviceId: string; message: string }> = [];
  for (const serviceId of serviceIds) {
    try {
      const r = runtimeFor(serviceId);
      if (!r.isLoaded()) await r.load();
      loaded.push(serviceId);
    } catch (err) {
      failed.push({ serviceId, message: (err as Error).message });
    }
  }
  post({ type: 'warmed', id, loaded, failed });
}

port.on('message', (m: ToThread) => {
  if (m.type === 'run') void run(m.id, m.serviceId, m.input);
  else if (m.type === 'warm') void warm(m.id, m.serviceIds);
  else if (m.type === 'cancel') controllers.get(m.id)?.abort();
});
post({ type: 'ready' });
