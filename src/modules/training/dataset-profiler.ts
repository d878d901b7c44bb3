import { Worker } from 'node:worker_threads';
import { compiledSibling } from '../../platform/paths';
import { ArtifactNotFound, type ArtifactStore, type ArtifactStoreConfig } from './artifact-store';
import { DatasetFormatError, profileDataset, type DatasetFormat, type DatasetProfile, type ParseLimits } from './dataset-parser';

export interface ProfileRequest {
  store: ArtifactStoreConfig;
  key: string;
  format: DatasetFormat;
  limits: ParseLimits;
}

export type ProfileResponse =
  | { ok: true; profile: DatasetProfile }
  | { ok: false; kind: 'format'; message: string; line?: number; column?: string }
  | { ok: false; kind: 'missing'; message: string; key: string }
  | { ok: false; kind: 'other'; message: string };

/** Files up to this size are profiled on the calling thread: one read chunk, a few milliseconds of CPU. */
export const INLINE_PROFILE_BYTES = 64 * 1024;
/** Profiling threads at once per process; more uploads completing together wait their turn. */
export const MAX_PROFILE_THREADS = 2;

let running = 0;
const waiting: Array<() => void> = [];
async function withThreadSlot<T>(fn: () => Promise<T>): Promise<T> {
  if (running >= MAX_PROFILE_THREADS) await new Promise<void>((r) => waiting.push(r));
  else running++;
  try {
    return await fn();
  } finally {
    const next = waiting.shift();
    if (next) next(); // the slot passes to the next in line
    else running--;
  }
}

/**
 * Profiles a stored dataset file. Parsing is CPU-bound (~0.25 s per MB of CSV), and on the API's
 * event loop a large upload would hold up every tenant's requests on that process for seconds, so
 * files above `inlineBytes` are profiled on a worker thread of their own (which reads the object
 * itself), at most MAX_PROFILE_THREADS at once. Throws what `profileDataset` throws
 * (DatasetFormatError, ArtifactNotFound).
 */
export async function profileStored(
  store: ArtifactStore, config: ArtifactStoreConfig | undefined, key: string, sizeBytes: number, format: DatasetFormat, limits: ParseLimits,
  inlineBytes = INLINE_PROFILE_BYTES,
): Promise<DatasetProfile & { onThread: boolean }> {
  if (!config || sizeBytes <= inlineBytes) return { ...(await profileDataset(await store.stream(key), format, limits)), onThread: false };
  // The slot is held until the thread has exited, not just answered.
  const res = await withThreadSlot(() => new Promise<ProfileResponse>((resolve, reject) => {
    const worker = new Worker(compiledSibling(__filename, 'profile-thread'), { workerData: { store: config, key, format, limits } satisfies ProfileRequest });
    let answer: ProfileResponse | null = null;
    let failure: Error | null = null;
    worker.once('message', (m: ProfileResponse) => (answer = m));
    worker.once('error', (err) => (failure = err));
    worker.once('exit', (code) => {
      if (answer) resolve(answer);
      else reject(failure ?? new Error(`the profiling thread exited (code ${code}) without an answer`));
    });
  }));
  if (res.ok) return { ...res.profile, onThread: true };
  if (res.kind === 'format') throw new DatasetFormatError(res.message, res.line, res.column);
  if (res.kind === 'missing') throw new ArtifactNotFound(res.key);
  throw new Error(res.message);
}
