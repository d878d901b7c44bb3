import { BadUserInputError } from './errors';

/**
 * What `datasets.upload` accepts: a file path (Node), a Blob/File, bytes (Buffer, Uint8Array,
 * ArrayBuffer), a web ReadableStream or any async iterable of chunks (a Node Readable).
 * The bytes are read into memory before the PUT, so a failed PUT can be retried.
 */
export type UploadSource =
  | string
  | Blob
  | ArrayBuffer
  | ArrayBufferView
  | ReadableStream<Uint8Array>
  | AsyncIterable<Uint8Array | string>;

export interface UploadBody {
  bytes: Uint8Array;
  /** File name when the source has one (path or File), for the format and the dataset's default name. */
  fileName: string | undefined;
}

export async function readUploadSource(source: UploadSource): Promise<UploadBody> {
  if (typeof source === 'string') {
    const fs = await import('node:fs/promises');
    const path = await import('node:path');
    return { bytes: new Uint8Array(await fs.readFile(source)), fileName: path.basename(source) };
  }
  if (typeof Blob !== 'undefined' && source instanceof Blob) {
    const name = (source as { name?: unknown }).name;
    return { bytes: new Uint8Array(await source.arrayBuffer()), fileName: typeof name === 'string' ? name : undefined };
  }
  if (source instanceof ArrayBuffer) return { bytes: new Uint8Array(source), fileName: undefined };
  if (ArrayBuffer.isView(source)) {
    return { bytes: new Uint8Array(source.buffer, source.byteOffset, source.byteLength), fileName: undefined };
  }
  const chunks: Uint8Array[] = [];
  const encoder = new TextEncoder();
  if (isReadableStream(source)) {
    const reader = source.getReader();
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      chunks.push(value);
    }
  } else if (source && typeof (source as AsyncIterable<unknown>)[Symbol.asyncIterator] === 'function') {
    for await (const chunk of source as AsyncIterable<Uint8Array | string>) chunks.push(typeof chunk === 'string' ? encoder.encode(chunk) : chunk);
  } else {
    throw new BadUserInputError('Upload source must be a path, Blob, bytes or a stream', { code: 'BAD_USER_INPUT', field: 'source' });
  }
  const pathName = (source as { path?: unknown }).path;
  return { bytes: concat(chunks), fileName: typeof pathName === 'string' ? pathName.split(/[\\/]/).pop() : undefined };
}

function isReadableStream(x: unknown): x is ReadableStream<Uint8Array> {
  return typeof (x as ReadableStream | undefined)?.getReader === 'function';
}

function concat(chunks: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(chunks.reduce((n, c) => n + c.byteLength, 0));
  let at = 0;
  for (const c of chunks) {
    out.set(c, at);
    at += c.byteLength;
  }
  return out;
}

/** CSV or JSONL from the file name (or the first non-blank character when there is none). */
export function inferDatasetFormat(fileName: string | undefined, bytes: Uint8Array): 'CSV' | 'JSONL' {
  const ext = fileName?.toLowerCase().match(/\.([a-z0-9]+)$/)?.[1];
  if (ext === 'csv' || ext === 'tsv') return 'CSV';
  if (ext === 'jsonl' || ext === 'ndjson' || ext === 'json') return 'JSONL';
  for (const b of bytes.subarray(0, 1024)) {
    if (b === 0x20 || b === 0x09 || b === 0x0a || b === 0x0d || b === 0xef || b === 0xbb || b === 0xbf) continue;
    return b === 0x7b ? 'JSONL' : 'CSV';
  }
  return 'CSV';
}
