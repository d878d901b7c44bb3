import sharp from 'sharp';
import { AppError, badInput } from '../../platform/errors';
import { FetchRefused, safeFetch, type ResolvedAddress } from './safe-fetch';

export const MAX_IMAGE_BYTES = 10 * 1024 * 1024;
export const MAX_IMAGE_PIXELS = 50_000_000;
export const IMAGE_FETCH_TIMEOUT_MS = 5_000;

export type ImageMediaType = 'image/jpeg' | 'image/png' | 'image/webp';

/** The normalised image a node runtime receives inline (width/height after EXIF orientation). */
export interface PreparedImage {
  base64: string;
  mediaType: ImageMediaType;
  width: number;
  height: number;
}

/** A checked image as bytes, before it is inlined (PreparedImage) or stored (ImageRef). */
export interface CheckedImage {
  buffer: Buffer;
  /** The client's own base64 when it was standard base64 already (saves re-encoding). */
  base64?: string;
  mediaType: ImageMediaType;
  width: number;
  height: number;
}

/**
 * What a job's input holds instead of the bytes when the API stored them in the artifact store:
 * `ref` is a server-generated key under the tenant's namespace (`inputs/<tenantId>/<uuid>`), never
 * one a client named. The node loads the bytes from the store before inference.
 */
export interface ImageRef {
  ref: string;
  mediaType: ImageMediaType;
  width: number;
  height: number;
  /** Size of the stored object, checked by the node when it loads it. */
  bytes: number;
}

export interface ImageSourceOptions {
  /** Resolves `upload:<id>` to the uploaded bytes; without it uploads are refused. */
  resolveUpload?: (id: string) => Promise<Buffer>;
  /** Allow https URLs on private/loopback networks (tests only). */
  allowPrivateNetworks?: boolean;
  /** DNS resolution override for URL images (tests). */
  resolveHost?: (host: string) => Promise<ResolvedAddress[]>;
  /** Extra CA for URL images (tests with a self-signed server). */
  tlsCa?: string | Buffer;
  /** The longest side the service's model reads. */
  maxImageSide?: number;
}

const FORMATS: Record<string, ImageMediaType> = { jpeg: 'image/jpeg', png: 'image/png', webp: 'image/webp' };
const FIELD = 'input.image';

/** Turns the client's `image` string (base64, data URL, https URL, upload:<id>) into checked base64. */
export async function prepareImage(value: string, opts: ImageSourceOptions = {}, field = FIELD): Promise<PreparedImage> {
  const { buffer, base64, mediaType, width, height } = await checkImage(value, opts, field);
  return { base64: base64 ?? buffer.toString('base64'), mediaType, width, height };
}

/** Turns the client's `image` string into checked bytes: size, decodable header, media type, pixel count. */
export async function checkImage(value: string, opts: ImageSourceOptions = {}, field = FIELD): Promise<CheckedImage> {
  const { buffer, base64 } = await loadBytes(value.trim(), opts, field);
  if (buffer.length === 0) throw badInput(field, 'image is empty');
  if (buffer.length > MAX_IMAGE_BYTES) throw badInput(field, `image is too large (${buffer.length} bytes; the limit is ${MAX_IMAGE_BYTES})`);
  let meta: sharp.Metadata;
  try {
    meta = await sharp(buffer, { limitInputPixels: false }).metadata();
  } catch {
    throw badInput(field, 'not a decodable image');
  }
  const mediaType = meta.format ? FORMATS[meta.format] : undefined;
  if (!mediaType) throw badInput(field, `unsupported media type ${meta.format ?? 'unknown'}; use JPEG, PNG or WebP`);
  const width = meta.autoOrient?.width ?? meta.width;
  const height = meta.autoOrient?.height ?? meta.height;
  if (!width || !height) throw badInput(field, 'not a decodable image (no dimensions)');
  if (width * height > MAX_IMAGE_PIXELS) {
    throw badInput(field, `image is too large (${width}x${height}; the limit is ${MAX_IMAGE_PIXELS / 1e6} megapixels)`);
  }
  if (opts.maxImageSide && Math.max(width, height) > opts.maxImageSide) {
    throw badInput(field, `image is too large (${width}x${height}; this service reads at most ${opts.maxImageSide} pixels a side)`);
  }
  return { buffer, base64, mediaType, width, height };
}

async function loadBytes(value: string, opts: ImageSourceOptions, field: string): Promise<{ buffer: Buffer; base64?: string }> {
  if (value.length === 0) throw badInput(field, 'image is empty');
  if (/^upload:/i.test(value)) return { buffer: await loadUpload(value.slice('upload:'.length), opts, field) };
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(value)) return { buffer: await loadUrl(value, opts, field) };
  return decodeBase64(value, field);
}

async function loadUpload(id: string, opts: ImageSourceOptions, field: string): Promise<Buffer> {
  if (!opts.resolveUpload) throw badInput(field, 'uploads are not available');
  if (!/^[A-Za-z0-9_-]{1,128}$/.test(id)) throw badInput(field, 'malformed upload id');
  try {
    return await opts.resolveUpload(id);
  } catch (err) {
    if (err instanceof AppError) throw err.code === 'NOT_FOUND' ? badInput(field, `upload ${id} not found`) : err;
    throw badInput(field, `upload ${id} could not be read`);
  }
}

async function loadUrl(url: string, opts: ImageSourceOptions, field: string): Promise<Buffer> {
  try {
    const { body } = await safeFetch(url, {
      maxBytes: MAX_IMAGE_BYTES,
      timeoutMs: IMAGE_FETCH_TIMEOUT_MS,
      allowPrivateNetworks: opts.allowPrivateNetworks,
      resolve: opts.resolveHost,
      ca: opts.tlsCa,
    });
    return body;
  } catch (err) {
    if (err instanceof FetchRefused) throw badInput(field, `image URL refused: ${err.message}`);
    throw err;
  }
}

const DATA_URL = /^data:([^;,]*)(;[^,]*)?,/i;

function decodeBase64(value: string, field: string): { buffer: Buffer; base64?: string } {
  let payload = value;
  const m = DATA_URL.exec(value);
  if (m) {
    const mime = (m[1] ?? '').toLowerCase();
    if (!mime.startsWith('image/')) throw badInput(field, `data URL media type ${mime || 'missing'} is not an image`);
    if (!/;base64$/i.test(m[2] ?? '')) throw badInput(field, 'data URLs must be base64-encoded');
    payload = value.slice(m[0].length);
  }
  // A request body is megabytes of base64: each whole-string pass below costs ~0.1 ms per 200 kB,
  // so the common case (no whitespace, standard alphabet) makes as few passes and copies as it can.
  const compact = /\s/.test(payload) ? payload.replace(/\s+/g, '') : payload;
  if (compact.length > Math.ceil((MAX_IMAGE_BYTES * 4) / 3) + 4) {
    throw badInput(field, `image is too large (the limit is ${MAX_IMAGE_BYTES} bytes decoded)`);
  }
  let padding = 0;
  while (padding < 3 && compact.charCodeAt(compact.length - 1 - padding) === 61 /* = */) padding++;
  // Standard or URL-safe alphabet, at most two padding characters, only at the end.
  if (padding > 2 || !/^[A-Za-z0-9+/_-]+={0,2}$/.test(compact) || (compact.length - padding) % 4 === 1) {
    throw badInput(field, 'not base64 (expected base64 bytes, a data: URL, an https:// URL or upload:<id>)');
  }
  const urlSafe = /[-_]/.test(compact);
  return { buffer: Buffer.from(compact, urlSafe ? 'base64url' : 'base64'), base64: urlSafe ? undefined : compact };
}
