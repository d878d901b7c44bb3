import { ArtifactNotFound, INPUT_KEY_RE, type ArtifactStore } from '../../../src/modules/training/artifact-store';
import { RuntimeError } from './types';

/** An input after its stored parts were loaded, and the buffers a worker thread may take over. */
export interface ResolvedInput {
  input: unknown;
  transfer: ArrayBuffer[];
}

/**
 * Loads what a job's input only names: `image: { ref, mediaType, width, height, bytes }` (the API
 * stored the bytes in the artifact store) becomes `image: { data, mediaType, width, height }` with
 * the bytes in an ArrayBuffer of their own, so the host can transfer it to a worker thread rather
 * than copy it. Inputs without a reference (base64 inline, text, series) come back unchanged.
 * A missing object is INPUT_EXPIRED; an unreadable store INPUT_UNAVAILABLE: the job fails, the node runs on.
 */
export async function resolveInput(input: unknown, store: () => ArtifactStore, tenantId?: string): Promise<ResolvedInput> {
  const image = (input as { image?: unknown } | null)?.image as { ref?: unknown; bytes?: unknown } | undefined;
  if (!image || typeof image !== 'object' || !('ref' in image)) return { input, transfer: [] };
  const { ref, bytes: expected, ...rest } = image;
  if (typeof ref !== 'string' || !INPUT_KEY_RE.test(ref)) throw new RuntimeError('INVALID_INPUT', 'input.image.ref is not a stored input reference');
  // Refs are made by the API from the caller's credential; a job never reads another tenant's input.
  if (tenantId !== undefined && !ref.startsWith(`inputs/${tenantId}/`)) {
    throw new RuntimeError('INVALID_INPUT', "input.image.ref is not in this job's tenant");
  }
  let buf: Buffer;
  try {
    buf = await store().get(ref);
  } catch (err) {
    if (err instanceof ArtifactNotFound) {
      throw new RuntimeError('INPUT_EXPIRED', 'the input image is no longer stored (inputs are deleted after the retention period); submit the prediction again');
    }
    // The store's own message may name paths or buckets: the tenant sees only its kind.
    const kind = (err as NodeJS.ErrnoException).code ?? (err as Error).name ?? 'error';
    throw new RuntimeError('INPUT_UNAVAILABLE', `the input image could not be read from the artifact store (${kind}); submit the prediction again`);
  }
  if (typeof expected === 'number' && buf.length !== expected) {
    throw new RuntimeError('INPUT_UNAVAILABLE', `the stored input image has ${buf.length} bytes, ${expected} were stored`);
  }
  // Buffers under 4 KiB may share Node's pool, and a pool cannot be transferred: copy those out.
  const data = buf.byteOffset === 0 && buf.byteLength === buf.buffer.byteLength && buf.buffer instanceof ArrayBuffer ? new Uint8Array(buf.buffer) : new Uint8Array(buf);
  return { input: { ...(input as object), image: { ...rest, data } }, transfer: [data.buffer as ArrayBuffer] };
}
