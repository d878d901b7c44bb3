import { randomUUID } from 'node:crypto';
import type { Logger } from 'pino';
import { AppError, ErrorCode } from '../../platform/errors';
import { artifactKeys, type ArtifactStore } from '../training/artifact-store';
import type { CheckedImage, ImageRef } from './images';

/**
 * Keeps prediction input images out of Postgres and the queue: the API writes the checked bytes to
 * the artifact store under `inputs/<tenantId>/<random uuid>` (the key is made here, from the
 * caller's credential, never from the request) and the job's input carries an ImageRef. Node agents
 * read the object before inference; the reconciler deletes it with the job's input after the
 * retention period.
 */
export class ImageInputStore {
  constructor(private readonly store: ArtifactStore, private readonly log?: Logger) {}

  async put(tenantId: string, image: CheckedImage): Promise<ImageRef> {
    const ref = artifactKeys.input(tenantId, randomUUID());
    try {
      const { bytes } = await this.store.put(ref, image.buffer, { contentType: image.mediaType });
      return { ref, mediaType: image.mediaType, width: image.width, height: image.height, bytes };
    } catch (err) {
      // The client learns only that storing failed; the cause (paths, bucket) is for the logs.
      this.log?.error({ err, store: this.store.kind }, 'storing an input image failed');
      throw new AppError(ErrorCode.SERVICE_UNAVAILABLE, 'the input image could not be stored; try again');
    }
  }

  /** Deletes an image no job will read (its call was refused, or repeated an idempotency key). */
  async discard(ref: ImageRef): Promise<void> {
    await this.store.delete(ref.ref).catch((err: Error) => {
      this.log?.warn({ err: err.message, ref: ref.ref }, 'deleting an unused input image failed; a bucket lifecycle rule on inputs/ removes it');
    });
  }
}
