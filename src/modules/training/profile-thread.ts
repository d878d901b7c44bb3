import { parentPort, workerData } from 'node:worker_threads';
import { ArtifactNotFound, createArtifactStore } from './artifact-store';
import { DatasetFormatError, profileDataset } from './dataset-parser';
import type { ProfileRequest, ProfileResponse } from './dataset-profiler';

/**
 * Worker-thread entry: profiles one stored dataset file (its own artifact-store client, reading
 * the object itself) and posts the profile or the error back. Started by `profileStored`.
 */
async function main(req: ProfileRequest): Promise<ProfileResponse> {
  try {
    const store = createArtifactStore(req.store);
    return { ok: true, profile: await profileDataset(await store.stream(req.key), req.format, req.limits) };
  } catch (err) {
    if (err instanceof DatasetFormatError) return { ok: false, kind: 'format', message: err.message, line: err.line, column: err.column };
    if (err instanceof ArtifactNotFound) return { ok: false, kind: 'missing', message: err.message, key: err.key };
    return { ok: false, kind: 'other', message: (err as Error).message ?? String(err) };
  }
}

void main(workerData as ProfileRequest).then((res) => parentPort!.postMessage(res));
