import type { Redis } from 'ioredis';
import type { Logger } from 'pino';
import { allowsPlainHttpWebhooks, type Env } from '../../config/env';
import type { Database } from '../../platform/db/database';
import type { keys } from '../../platform/queue/messages';
import type { JobsService } from '../compute/jobs.service';
import { createArtifactStore, type ArtifactStore } from './artifact-store';
import { DatasetsService } from './datasets.service';
import { ModelsService } from './models.service';
import { TrainingService } from './training.service';
import { UploadSigner } from './upload-signing';

/** The training module's services, as they appear in AppServices. */
export interface TrainingServices {
  datasets: DatasetsService;
  training: TrainingService;
  models: ModelsService;
}

/** Wires datasets, training and the model registry over the app's database, Redis and jobs. */
export function createTraining(
  env: Env, db: Database, redis: Redis, k: ReturnType<typeof keys>, log: Logger, jobs: JobsService, store: ArtifactStore = createArtifactStore(env),
): TrainingServices {
  const datasets = new DatasetsService(db, store, new UploadSigner(env.JWT_SECRET), { publicUrl: env.PUBLIC_URL, maxBytes: env.UPLOAD_MAX_BYTES, storeConfig: env });
  return {
    datasets,
    training: new TrainingService(db, store, jobs, datasets, redis, k, log, { allowPlainHttpWebhooks: allowsPlainHttpWebhooks(env) }),
    models: new ModelsService(db),
  };
}
