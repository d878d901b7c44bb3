import sharp from 'sharp';
import { RuntimeError } from '../types';
import { tf } from './tf';

/** What prepareInput puts in `input.image`. */
export interface ImagePayload {
  base64: string;
  mediaType: string;
  width: number;
  height: number;
}

export interface RgbImage {
  data: Buffer;
  width: number;
  height: number;
}

export function imageBytes(image: ImagePayload): Buffer {
  if (!image || typeof image.base64 !== 'string') throw new RuntimeError('INVALID_INPUT', 'input.image is missing; run prepareInput first');
  return Buffer.from(image.base64, 'base64');
}

/** Decodes to raw RGB (EXIF orientation applied), optionally resized to exactly w x h. */
export async function decodeRgb(image: ImagePayload, size?: { width: number; height: number }): Promise<RgbImage> {
  try {
    let pipeline = sharp(imageBytes(image), { limitInputPixels: 50_000_000 }).autoOrient().removeAlpha().toColourspace('srgb');
    if (size) pipeline = pipeline.resize(size.width, size.height, { fit: 'fill' });
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
