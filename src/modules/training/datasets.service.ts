import { randomUUID } from 'node:crypto';
import { Transform, type Readable } from 'node:stream';
import type { EntityManager } from 'typeorm';
import { z } from 'zod';
import type { Database } from '../../platform/db/database';
import { AppError, ErrorCode, badInput, notFound } from '../../platform/errors';
import { keysetWhere, paginate, type PageArgs } from '../../platform/pagination';
import { isUuid } from '../../platform/uuid';
import { parseInput } from '../../platform/validation';
import { requireScope } from '../tenancy/principal';
import type { Caller } from '../tenancy/tenancy.service';
import { ArtifactNotFound, artifactKeys, type ArtifactStore, type ArtifactStoreConfig } from './artifact-store';
import { DEFAULT_MAX_COLUMNS, DatasetFormatError, type DatasetFormat } from './dataset-parser';
import { profileStored } from './dataset-profiler';
import type { ColumnProfile } from './training.contract';
import type { UploadSigner } from './upload-signing';

export const UPLOAD_TTL_SECONDS = 15 * 60;

/** Content types a signed upload accepts, per format (a charset parameter must be UTF-8). */
export const UPLOAD_CONTENT_TYPES: Record<DatasetFormat, string[]> = {
  CSV: ['text/csv', 'text/plain', 'application/csv'],
  JSONL: ['application/x-ndjson', 'application/jsonl', 'application/json', 'text/plain'],
};

export interface DatasetVersionView {
  id: string;
  datasetId: string;
  version: number;
  rowCount: number;
  contentHash: string;
  sizeBytes: number;
  columns: ColumnProfile[];
  storageKey: string;
  format: DatasetFormat;
  createdAt: Date;
}

export interface UploadView {
  id: string;
  url: string;
  method: 'PUT';
  headers: Record<string, string>;
  expiresAt: Date;
  maxBytes: number;
}

/** What the PUT /uploads/:id handler answers: an HTTP status and a JSON body. */
export class UploadHttpError extends Error {
  constructor(readonly status: number, readonly code: string, message: string) {
    super(message);
  }
}

const createSchema = z.strictObject({ name: z.string().trim().min(1).max(200), format: z.enum(['CSV', 'JSONL']).nullish().transform((f) => f ?? 'CSV') });

const toVersion = (r: any): DatasetVersionView => ({
  id: r.id, datasetId: r.dataset_id, version: r.version, rowCount: r.row_count, contentHash: r.content_hash, sizeBytes: Number(r.size_bytes),
  columns: r.columns, storageKey: r.storage_key, format: r.format, createdAt: r.created_at,
});

/**
 * Datasets: signed upload URLs (the bytes go straight to the artifact store, never through
 * GraphQL), then a streaming validation and profile into an immutable version named by the
 * SHA-256 of the bytes (the same bytes again give the same version).
 */
export class DatasetsService {
  constructor(
    private readonly db: Database,
    private readonly store: ArtifactStore,
    private readonly signer: UploadSigner,
    private readonly opts: {
      publicUrl?: string; maxBytes: number; maxColumns?: number;
      /** How a worker thread reaches the same store: larger files are profiled off the event loop (dataset-profiler.ts). */
      storeConfig?: ArtifactStoreConfig;
    },
  ) {}

  async createDataset(caller: Caller & { origin?: string }, raw: unknown) {
    const p = requireScope(caller.principal, 'TRAIN');
    const input = parseInput(createSchema, raw);
    return this.db.tenant(p.tenantId, async (m) => {
      const [d] = await m.query(`INSERT INTO datasets (tenant_id, name, format) VALUES ($1, $2, $3) RETURNING id, name, format, created_at`, [p.tenantId, input.name, input.format]);
      const upload = await this.newUpload(m, p.tenantId, d.id, input.format, caller.origin);
      return { dataset: { id: d.id, name: d.name, format: d.format, createdAt: d.created_at }, upload };
    });
  }

  /** Another upload URL for a new version of an existing dataset. */
  async createDatasetUpload(caller: Caller & { origin?: string }, datasetId: string): Promise<UploadView> {
    const p = requireScope(caller.principal, 'TRAIN');
    if (!isUuid(datasetId)) throw notFound('Dataset');
    return this.db.tenant(p.tenantId, async (m) => {
      const [d] = await m.query(`SELECT id, format FROM datasets WHERE id = $1 AND tenant_id = $2`, [datasetId, p.tenantId]);
      if (!d) throw notFound('Dataset');
      return this.newUpload(m, p.tenantId, d.id, d.format, caller.origin);
    });
  }

  private async newUpload(m: EntityManager, tenantId: string, datasetId: string, format: DatasetFormat, origin?: string): Promise<UploadView> {
    const id = randomUUID();
    const expires = Math.floor(Date.now() / 1000) + UPLOAD_TTL_SECONDS;
    await m.query(
      `INSERT INTO uploads (id, tenant_id, dataset_id, format, max_bytes, expires_at, storage_key) VALUES ($1, $2, $3, $4, $5, to_timestamp($6), $7)`,
      [id, tenantId, datasetId, format, this.opts.maxBytes, expires, artifactKeys.upload(tenantId, datasetId, id)],
    );
    const base = (this.opts.publicUrl ?? origin ?? 'http://localhost:4000').replace(/\/+$/, '');
    return {
      id, method: 'PUT', maxBytes: this.opts.maxBytes, expiresAt: new Date(expires * 1000),
      url: `${base}/uploads/${id}?expires=${expires}&sig=${this.signer.sign(id, expires)}`,
      headers: { 'content-type': UPLOAD_CONTENT_TYPES[format][0]! },
    };
  }

  /**
   * The body of a signed PUT, streamed into the store with the size limit enforced as it arrives.
   * An upload URL takes one successful PUT; a failed one (too large, aborted) may be retried.
   */
  async receiveUpload(req: { id: string; expires: unknown; sig: unknown; contentType?: string; contentLength?: string; body: Readable }): Promise<{ bytes: number }> {
    const expires = Number(req.expires);
    if (!isUuid(req.id) || !this.signer.verify(req.id, expires, String(req.sig ?? ''))) {
      throw new UploadHttpError(403, 'FORBIDDEN', 'Invalid upload URL signature; use the URL createDataset returned, unchanged');
    }
    if (expires * 1000 < Date.now()) throw new UploadHttpError(410, 'EXPIRED', 'This upload URL has expired; request a new one (createDatasetUpload)');
    const [row] = await this.db.withSettings({ 'app.upload_id': req.id }, (m) =>
      m.query(`SELECT id, tenant_id, format, max_bytes, used_at, storage_key FROM uploads WHERE id = $1`, [req.id]),
    );
    if (!row) throw new UploadHttpError(404, 'NOT_FOUND', 'Upload not found');
    if (row.used_at) throw new UploadHttpError(410, 'USED', 'This upload URL has already been used; request a new one for another file');
    const type = (req.contentType ?? '').split(';')[0]!.trim().toLowerCase();
    const charset = /charset=([^;]+)/i.exec(req.contentType ?? '')?.[1]?.trim().replace(/"/g, '').toLowerCase();
    const allowed = UPLOAD_CONTENT_TYPES[row.format as DatasetFormat];
    if (!allowed.includes(type) || (charset && charset !== 'utf-8' && charset !== 'utf8')) {
      throw new UploadHttpError(415, 'UNSUPPORTED_MEDIA_TYPE', `Content-Type must be one of ${allowed.join(', ')} (UTF-8) for a ${row.format} dataset`);
    }
    const limit = Math.min(Number(row.max_bytes), this.opts.maxBytes);
    if (req.contentLength !== undefined && Number(req.contentLength) > limit) {
      throw new UploadHttpError(413, 'TOO_LARGE', `The file is larger than the limit of ${limit} bytes`);
    }
    // UPDATE ... RETURNING answers [rows, count] through TypeORM.
    const [claimed] = (await this.db.tenant(row.tenant_id, (m) =>
      m.query(`UPDATE uploads SET used_at = now() WHERE id = $1 AND used_at IS NULL RETURNING id`, [req.id]),
    )) as [unknown[], number];
    if (!claimed.length) throw new UploadHttpError(410, 'USED', 'This upload URL has already been used; request a new one for another file');
    let bytes = 0;
    const limiter = new Transform({
      transform(chunk: Buffer, _enc, cb) {
        bytes += chunk.length;
        if (bytes > limit) cb(new UploadHttpError(413, 'TOO_LARGE', `The file is larger than the limit of ${limit} bytes`));
        else cb(null, chunk);
      },
    });
    req.body.on('error', (err) => limiter.destroy(err));
    req.body.pipe(limiter);
    try {
      await this.store.put(row.storage_key, limiter);
    } catch (err) {
      await this.store.delete(row.storage_key).catch(() => undefined);
      await this.db.tenant(row.tenant_id, (m) => m.query(`UPDATE uploads SET used_at = NULL WHERE id = $1`, [req.id]));
      if (err instanceof UploadHttpError) throw err;
      throw new UploadHttpError(400, 'UPLOAD_FAILED', `The upload did not complete: ${(err as Error).message}`);
    }
    await this.db.tenant(row.tenant_id, (m) => m.query(`UPDATE uploads SET size_bytes = $2 WHERE id = $1`, [req.id, bytes]));
    return { bytes };
  }

  /**
   * Validates and profiles the uploaded file into an immutable version. A file that fails leaves
   * no version and no stored bytes; the same bytes as an existing version give that version.
   */
  async completeDatasetUpload(caller: Caller, uploadId: string): Promise<DatasetVersionView> {
    const p = requireScope(caller.principal, 'TRAIN');
    if (!isUuid(uploadId)) throw notFound('Upload');
    const [u] = await this.db.tenant(p.tenantId, (m) =>
      m.query(`SELECT id, dataset_id, format, used_at, size_bytes, storage_key, dataset_version_id FROM uploads WHERE id = $1 AND tenant_id = $2`, [uploadId, p.tenantId]),
    );
    if (!u) throw notFound('Upload');
    if (u.dataset_version_id) return this.version(p.tenantId, u.dataset_version_id);
    if (!u.used_at || u.size_bytes === null) throw badInput('uploadId', 'nothing has been uploaded to this upload URL yet (PUT the file to upload.url first)');
    let profile;
    try {
      profile = await profileStored(this.store, this.opts.storeConfig, u.storage_key, Number(u.size_bytes), u.format, {
        maxBytes: this.opts.maxBytes, maxColumns: this.opts.maxColumns ?? DEFAULT_MAX_COLUMNS,
      });
    } catch (err) {
      if (!(err instanceof DatasetFormatError) && !(err instanceof ArtifactNotFound)) throw err;
      // A concurrent completion of this upload finished meanwhile (and may have removed the bytes as a
      // duplicate of an earlier version): answer its version, and delete nothing a version may read.
      const [now] = await this.db.tenant(p.tenantId, (m) => m.query(`SELECT dataset_version_id FROM uploads WHERE id = $1`, [uploadId]));
      if (now?.dataset_version_id) return this.version(p.tenantId, now.dataset_version_id);
      await this.store.delete(u.storage_key).catch(() => undefined);
      await this.db.tenant(p.tenantId, (m) => m.query(`UPDATE uploads SET size_bytes = NULL WHERE id = $1`, [uploadId]));
      if (err instanceof ArtifactNotFound) throw badInput('uploadId', 'the uploaded file is gone; upload it again with a new upload URL');
      throw new AppError(ErrorCode.BAD_USER_INPUT, `file: ${err.message}`, { field: 'file', ...(err.line ? { line: err.line } : {}), ...(err.column ? { column: err.column } : {}) });
    }
    const { versionId, deleteUpload } = await this.db.tenant(p.tenantId, async (m) => {
      await m.query(`SELECT id FROM datasets WHERE id = $1 FOR UPDATE`, [u.dataset_id]);
      // Another completion of this upload may have finished while this one profiled (the check above
      // is outside any lock): its version stands, and this call answers it.
      const [done] = await m.query(`SELECT dataset_version_id FROM uploads WHERE id = $1 FOR UPDATE`, [uploadId]);
      if (done?.dataset_version_id) return { versionId: done.dataset_version_id as string, deleteUpload: false };
      const [same] = await m.query(`SELECT id, storage_key FROM dataset_versions WHERE dataset_id = $1 AND content_hash = $2`, [u.dataset_id, profile.contentHash]);
      let id: string = same?.id;
      if (!id) {
        const [row] = await m.query(
          `INSERT INTO dataset_versions (dataset_id, tenant_id, version, content_hash, row_count, size_bytes, columns, storage_key)
           SELECT $1, $2, COALESCE(max(version), 0) + 1, $3, $4, $5, $6::jsonb, $7 FROM dataset_versions WHERE dataset_id = $1
           RETURNING id`,
          [u.dataset_id, p.tenantId, profile.contentHash, profile.rowCount, profile.bytes, JSON.stringify(profile.columns), u.storage_key],
        );
        id = row.id;
      }
      await m.query(`UPDATE uploads SET dataset_version_id = $2 WHERE id = $1`, [uploadId, id]);
      // The same bytes are already stored under the earlier version's key; never delete the key a version reads.
      return { versionId: id, deleteUpload: !!same && same.storage_key !== u.storage_key };
    });
    if (deleteUpload) await this.store.delete(u.storage_key).catch(() => undefined);
    return this.version(p.tenantId, versionId);
  }

  async version(tenantId: string, id: string): Promise<DatasetVersionView> {
    if (!isUuid(id)) throw notFound('Dataset version');
    const [r] = await this.db.tenant(tenantId, (m) =>
      m.query(`SELECT v.*, d.format FROM dataset_versions v JOIN datasets d ON d.id = v.dataset_id WHERE v.id = $1 AND v.tenant_id = $2`, [id, tenantId]),
    );
    if (!r) throw notFound('Dataset version');
    return toVersion(r);
  }

  /** The version a training job uses: the given one, or the dataset's latest. */
  async versionForTraining(tenantId: string, ref: { datasetVersionId?: string; datasetId?: string }): Promise<DatasetVersionView> {
    if (ref.datasetVersionId) return this.version(tenantId, ref.datasetVersionId);
    if (!isUuid(ref.datasetId!)) throw notFound('Dataset');
    const rows = await this.db.tenant(tenantId, (m) =>
      m.query(
        `SELECT d.id AS did, d.format, v.* FROM datasets d LEFT JOIN dataset_versions v ON v.dataset_id = d.id
          WHERE d.id = $1 AND d.tenant_id = $2 ORDER BY v.version DESC NULLS LAST LIMIT 1`, [ref.datasetId, tenantId]),
    );
    if (!rows[0]) throw notFound('Dataset');
    if (!rows[0].id) throw badInput('input.datasetId', 'the dataset has no version yet (upload a file and call completeDatasetUpload)');
    return toVersion(rows[0]);
  }

  async dataset(caller: Caller, id: string) {
    const p = requireScope(caller.principal, 'READ');
    if (!isUuid(id)) throw notFound('Dataset');
    return this.db.tenant(p.tenantId, async (m) => {
      const [d] = await m.query(`SELECT id, name, format, created_at FROM datasets WHERE id = $1 AND tenant_id = $2`, [id, p.tenantId]);
      if (!d) throw notFound('Dataset');
      const versions = await m.query(`SELECT v.*, $2::text AS format FROM dataset_versions v WHERE v.dataset_id = $1 ORDER BY v.version DESC`, [id, d.format]);
      return { id: d.id, name: d.name, format: d.format, createdAt: d.created_at, versions: versions.map(toVersion) };
    });
  }

  async datasets(caller: Caller, args: PageArgs) {
    const p = requireScope(caller.principal, 'READ');
    return this.db.tenant(p.tenantId, (m) =>
      paginate(args, async (after, limit) => {
        const where = keysetWhere(after, 2, 'datasets');
        const rows = await m.query(
          `SELECT id, name, format, created_at FROM datasets WHERE tenant_id = $1 AND ${where.sql} ORDER BY created_at DESC, id DESC LIMIT ${limit}`,
          [p.tenantId, ...where.params],
        );
        const ids = rows.map((r: any) => r.id);
        const versions = ids.length
          ? await m.query(`SELECT v.*, d.format FROM dataset_versions v JOIN datasets d ON d.id = v.dataset_id WHERE v.dataset_id = ANY($1::uuid[]) ORDER BY v.version DESC`, [ids])
          : [];
        return rows.map((r: any) => ({
          id: r.id, name: r.name, format: r.format, createdAt: r.created_at,
          versions: versions.filter((v: any) => v.dataset_id === r.id).map(toVersion),
        }));
      }),
    );
  }
}
