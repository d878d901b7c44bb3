import { loadEnv } from '../../../../src/config/env';
import { createArtifactStore, type ArtifactStore } from '../../../../src/modules/training/artifact-store';

let store: ArtifactStore | null = null;

/**
 * The artifact store of this process (and thread), built from the same environment variables as
 * the API's (DATA_DIR, or ARTIFACT_STORE=s3 with S3_*): node agents reach datasets and models only
 * through it, never through the database.
 */
export function artifactStore(): ArtifactStore {
  store ??= createArtifactStore(loadEnv(process.env));
  return store;
}

/** Tests and benchmarks point a process at another store. */
export function setArtifactStore(s: ArtifactStore | null): void {
  store = s;
}
