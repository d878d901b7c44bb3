import { randomBytes } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdir, readFile, rename, rm, stat, unlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { UUID_PATTERN } from '../../platform/uuid';

/**
 * Where datasets, model artifacts, training checkpoints and prediction input images live: a local
 * directory (default) or an S3-compatible bucket (MinIO in docker-compose). The API writes uploads and
 * input images, node agents read datasets and input images and write models and checkpoints; nothing
 * here touches the database, so node agents may import it. Keys are `/`-separated, namespaced by
 * tenant id (`tenants/<tenantId>/...`, and `inputs/<tenantId>/...` for input images, under one prefix
 * so that a bucket lifecycle rule can expire them).
 */
export interface ArtifactStore {
  readonly kind: 'local' | 's3';
  /** Writes the whole object atomically (a reader never sees half of it); returns its size. */
  put(key: string, body: Buffer | string | Readable, opts?: { contentType?: string }): Promise<{ bytes: number }>;
  /** The whole object; throws ArtifactNotFound when missing. */
  get(key: string): Promise<Buffer>;
  stream(key: string): Promise<Readable>;
  exists(key: string): Promise<boolean>;
  /** Idempotent: deleting a missing key is not an error. */
  delete(key: string): Promise<void>;
}

export class ArtifactNotFound extends Error {
  constructor(readonly key: string) {
    super(`artifact ${key} not found`);
    this.name = 'ArtifactNotFound';
  }
}

export interface ArtifactStoreConfig {
  ARTIFACT_STORE: 'local' | 's3';
  DATA_DIR: string;
  S3_ENDPOINT?: string;
  S3_REGION?: string;
  S3_BUCKET?: string;
  S3_ACCESS_KEY_ID?: string;
  S3_SECRET_ACCESS_KEY?: string;
  S3_FORCE_PATH_STYLE?: boolean;
}

export function createArtifactStore(cfg: ArtifactStoreConfig): ArtifactStore {
  if (cfg.ARTIFACT_STORE === 's3') {
    if (!cfg.S3_BUCKET) throw new Error('ARTIFACT_STORE=s3 needs S3_BUCKET');
    return new S3ArtifactStore({
      bucket: cfg.S3_BUCKET, endpoint: cfg.S3_ENDPOINT, region: cfg.S3_REGION ?? 'us-east-1',
      accessKeyId: cfg.S3_ACCESS_KEY_ID, secretAccessKey: cfg.S3_SECRET_ACCESS_KEY, forcePathStyle: cfg.S3_FORCE_PATH_STYLE ?? true,
    });
  }
  return new LocalArtifactStore(join(cfg.DATA_DIR, 'artifacts'));
}

const KEY_RE = /^[A-Za-z0-9][A-Za-z0-9._=-]*(\/[A-Za-z0-9][A-Za-z0-9._=-]*)*$/;

/** Keys are plain relative paths: no `..`, no leading slash, no odd characters. */
export function checkKey(key: string): string {
  if (key.length > 900 || !KEY_RE.test(key) || key.split('/').some((s) => s === '.' || s === '..')) {
    throw new Error(`invalid artifact key "${key}"`);
  }
  return key;
}

/** Tenant-namespaced keys, built in one place. */
export const artifactKeys = {
  tenant: (tenantId: string) => `tenants/${tenantId}`,
  upload: (tenantId: string, datasetId: string, uploadId: string) => `tenants/${tenantId}/datasets/${datasetId}/uploads/${uploadId}`,
  trialModel: (tenantId: string, trainingJobId: string, trial: number) => `tenants/${tenantId}/training/${trainingJobId}/trial-${trial}/model.json`,
  trialCheckpoint: (tenantId: string, trainingJobId: string, trial: number) => `tenants/${tenantId}/training/${trainingJobId}/trial-${trial}/checkpoint.json`,
  /** A prediction's input image, written by the API, read by the node, deleted with the job's input by retention. */
  input: (tenantId: string, inputId: string) => `inputs/${tenantId}/${inputId}`,
};

/** `inputs/<tenant uuid>/<uuid>`: the only shape of key a job's image reference may have. */
export const INPUT_KEY_RE = new RegExp(`^inputs/${UUID_PATTERN}/${UUID_PATTERN}$`);

/** Files under a root directory; writes go to a temporary file renamed into place (atomic). */
export class LocalArtifactStore implements ArtifactStore {
  readonly kind = 'local' as const;
  readonly root: string;

  constructor(root: string) {
    this.root = resolve(root);
  }

  private path(key: string): string {
    return join(this.root, ...checkKey(key).split('/'));
  }

  async put(key: string, body: Buffer | string | Readable): Promise<{ bytes: number }> {
    const file = this.path(key);
    await mkdir(dirname(file), { recursive: true });
    const tmp = `${file}.${randomBytes(6).toString('hex')}.tmp`;
    try {
      if (body instanceof Readable) await pipeline(body, createWriteStream(tmp));
      else await writeFile(tmp, body);
      await rename(tmp, file);
    } catch (err) {
      await rm(tmp, { force: true });
      throw err;
    }
    if (Buffer.isBuffer(body)) return { bytes: body.length };
    return { bytes: (await stat(file)).size };
  }

  async get(key: string): Promise<Buffer> {
    try {
      return await readFile(this.path(key));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') throw new ArtifactNotFound(key);
      throw err;
    }
  }

  async stream(key: string): Promise<Readable> {
    const file = this.path(key);
    if (!(await this.exists(key))) throw new ArtifactNotFound(key);
    return createReadStream(file);
  }

  async exists(key: string): Promise<boolean> {
    try {
      return (await stat(this.path(key))).isFile();
    } catch {
      return false;
    }
  }

  async delete(key: string): Promise<void> {
    await unlink(this.path(key)).catch((err: NodeJS.ErrnoException) => {
      if (err.code !== 'ENOENT') throw err;
    });
  }
}

export interface S3Options {
  bucket: string;
  endpoint?: string;
  region: string;
  accessKeyId?: string;
  secretAccessKey?: string;
  forcePathStyle: boolean;
}

type S3Module = typeof import('@aws-sdk/client-s3');

/**
 * An S3-compatible bucket (AWS S3, MinIO) through @aws-sdk/client-s3. A stream of unknown length
 * is spooled to a temporary file first, since PutObject needs the length (objects here are at
 * most UPLOAD_MAX_BYTES); S3 PUTs are atomic, so readers never see half an object.
 */
export class S3ArtifactStore implements ArtifactStore {
  readonly kind = 's3' as const;
  private readonly s3: S3Module;
  private readonly client: InstanceType<S3Module['S3Client']>;

  constructor(private readonly opts: S3Options) {
    // Loaded only when used: the SDK is large and most processes use the local store.
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    this.s3 = require('@aws-sdk/client-s3') as S3Module;
    this.client = new this.s3.S3Client({
      region: opts.region,
      endpoint: opts.endpoint,
      forcePathStyle: opts.forcePathStyle,
      // Plain PUT bodies (no aws-chunked checksum trailers) work with every S3-compatible server.
      requestChecksumCalculation: 'WHEN_REQUIRED',
      responseChecksumValidation: 'WHEN_REQUIRED',
      credentials: opts.accessKeyId && opts.secretAccessKey ? { accessKeyId: opts.accessKeyId, secretAccessKey: opts.secretAccessKey } : undefined,
    });
  }

  async put(key: string, body: Buffer | string | Readable, opts: { contentType?: string } = {}): Promise<{ bytes: number }> {
    checkKey(key);
    if (!(body instanceof Readable)) {
      const buf = typeof body === 'string' ? Buffer.from(body) : body;
      await this.client.send(new this.s3.PutObjectCommand({ Bucket: this.opts.bucket, Key: key, Body: buf, ContentType: opts.contentType }));
      return { bytes: buf.length };
    }
    const tmp = join(tmpdir(), `nimbus-s3-${randomBytes(8).toString('hex')}`);
    try {
      await pipeline(body, createWriteStream(tmp));
      const { size } = await stat(tmp);
      await this.client.send(new this.s3.PutObjectCommand({
        Bucket: this.opts.bucket, Key: key, Body: createReadStream(tmp), ContentLength: size, ContentType: opts.contentType,
      }));
      return { bytes: size };
    } finally {
      await rm(tmp, { force: true });
    }
  }

  async get(key: string): Promise<Buffer> {
    const s = await this.stream(key);
    const chunks: Buffer[] = [];
    for await (const c of s) chunks.push(c as Buffer);
    return Buffer.concat(chunks);
  }

  async stream(key: string): Promise<Readable> {
    checkKey(key);
    try {
      const res = await this.client.send(new this.s3.GetObjectCommand({ Bucket: this.opts.bucket, Key: key }));
      return res.Body as Readable;
    } catch (err) {
      if (isMissing(err)) throw new ArtifactNotFound(key);
      throw err;
    }
  }

  async exists(key: string): Promise<boolean> {
    checkKey(key);
    try {
      await this.client.send(new this.s3.HeadObjectCommand({ Bucket: this.opts.bucket, Key: key }));
      return true;
    } catch (err) {
      if (isMissing(err)) return false;
      throw err;
    }
  }

  async delete(key: string): Promise<void> {
    checkKey(key);
    await this.client.send(new this.s3.DeleteObjectCommand({ Bucket: this.opts.bucket, Key: key }));
  }
}

function isMissing(err: unknown): boolean {
  const e = err as { name?: string; $metadata?: { httpStatusCode?: number } };
  return e.name === 'NoSuchKey' || e.name === 'NotFound' || e.$metadata?.httpStatusCode === 404;
}
