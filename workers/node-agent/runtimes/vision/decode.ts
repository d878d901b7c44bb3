import sharp from 'sharp';
import { RuntimeError } from '../types';
import { tf } from './tf';

/**
 * `input.image` as a runtime sees it: base64 (prepareInput without a store: the direct callers), or
 * the bytes themselves, which the runtime host loaded from the artifact store for a stored
 * reference (`{ ref }`, as the API submits jobs) and handed to this thread without a copy.
 */
export type ImagePayload = { mediaType: string; width: number; height: number } & ({ base64: string } | { data: Uint8Array });

export interface RgbImage {
  data: Buffer;
  width: number;
  height: number;
}

export function imageBytes(image: ImagePayload): Buffer {
  const i = image as Partial<{ base64: unknown; data: unknown; ref: unknown }> | null;
  if (i && i.data instanceof Uint8Array) return Buffer.from(i.data.buffer, i.data.byteOffset, i.data.byteLength);
  if (i && typeof i.base64 === 'string') return Buffer.from(i.base64, 'base64');
  if (i && typeof i.ref === 'string') throw new RuntimeError('INVALID_INPUT', 'input.image is a stored reference: run it through the runtime host, which loads it');
  throw new RuntimeError('INVALID_INPUT', 'input.image is missing; run prepareInput first');
}

/**
 * Decodes to raw RGB (EXIF orientation applied), optionally resized to exactly w x h, or shrunk to
 * fit `maxSide` (aspect kept, never enlarged).
 */
export async function decodeRgb(image: ImagePayload, size?: { width: number; height: number } | { maxSide: number }): Promise<RgbImage> {
  try {
    let pipeline = sharp(imageBytes(image), { limitInputPixels: 50_000_000 }).autoOrient().removeAlpha().toColourspace('srgb');
    if (size && 'maxSide' in size) pipeline = pipeline.resize(size.maxSide, size.maxSide, { fit: 'inside', withoutEnlargement: true });
    else if (size) pipeline = pipeline.resize(size.width, size.height, { fit: 'fill' });
    const { data, info } = await pipeline.raw().toBuffer({ resolveWithObject: true });
    return { data, width: info.width, height: info.height };
  } catch (err) {
    if (err instanceof RuntimeError) throw err;
    throw new RuntimeError('INVALID_INPUT', `image could not be decoded: ${(err as Error).message}`);
  }
}

/** [1, h, w, 3] int32 tensor; callers dispose it. */
export function toTensor(img: RgbImage): tf.Tensor4D {
  return tf.tensor4d(Int32Array.from(img.data), [1, img.height, img.width, 3], 'int32');
}
