import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import type { Client } from 'pg';
import { profileDataset, readTable } from '../../src/modules/training/dataset-parser';
import { signUpTenant, startTestApi, type TestApi, type TestTenant } from '../support/api';
import { ownerClient } from '../support/db';
import { UploadSigner } from '../../src/modules/training/upload-signing';
import { COMPLETE_UPLOAD, CREATE_DATASET, CREATE_UPLOAD, DATASET, errorOf, putFile, upload, type Gql } from './support';

const MAX = 20_000;
let api: TestApi;
let owner: Client;
let gql: Gql;
let a: TestTenant;
let b: TestTenant;
const dataDir = mkdtempSync(join(tmpdir(), 'nimbus-datasets-'));
beforeAll(async () => {
  api = await startTestApi({ UPLOAD_MAX_BYTES: String(MAX), DATA_DIR: dataDir });
  gql = (q, v, t) => api.gql(q, v, t.token);
  owner = await ownerClient();
  a = await signUpTenant(api, 'Alpha');
  b = await signUpTenant(api, 'Beta');
});
afterAll(async () => {
  await owner.end();
  await api.close();
});

const newDataset = async (format: 'CSV' | 'JSONL' = 'CSV', t = a) => (await gql(CREATE_DATASET, { input: { name: 'd', format } }, t)).data.createDataset;
const versions = async (datasetId: string) => (await owner.query('SELECT count(*)::int AS n FROM dataset_versions WHERE dataset_id = $1', [datasetId])).rows[0].n;
const storedAt = async (uploadId: string) => join(dataDir, 'artifacts', (await owner.query('SELECT storage_key FROM uploads WHERE id = $1', [uploadId])).rows[0].storage_key);

describe('malformed files', () => {
  const cases: Array<[string, 'CSV' | 'JSONL', string | Buffer, RegExp, number | undefined]> = [
    ['ragged row', 'CSV', 'a,b,c\n1,2,3\n4,5\n6,7,8\n', /^file: line 3: expected 3 fields \(as in the header\), found 2$/, 3],
    ['invalid UTF-8', 'CSV', Buffer.concat([Buffer.from('name,n\nok,1\n'), Buffer.from([0x63, 0xc3, 0x28]), Buffer.from(',2\n')]), /line 3: the file is not valid UTF-8/, 3],
    ['Latin-1 bytes', 'CSV', Buffer.from('city,n\nZ\xfcrich,1\n', 'latin1'), /line 2: the file is not valid UTF-8/, 2],
    ['empty file', 'CSV', '', /the file is empty/, undefined],
    ['header only', 'CSV', 'a,b\n', /no data rows/, undefined],
    ['unclosed quote', 'CSV', 'a,b\n1,"x\n', /line 2: malformed CSV/, 2],
    ['duplicate column', 'CSV', 'a,b,a\n1,2,3\n', /column "a" appears twice/, 1],
    ['too many columns', 'CSV', `${Array.from({ length: 501 }, (_, i) => `c${i}`).join(',')}\n${Array.from({ length: 501 }, () => 1).join(',')}\n`, /501 columns, more than the limit of 500/, 1],
    ['non-object JSONL line', 'JSONL', '{"a":1}\n[1,2]\n', /^file: line 2: expected a JSON object, found an array$/, 2],
    ['invalid JSONL line', 'JSONL', '{"a":1}\n{"a":2}\n{"a":\n', /line 3: invalid JSON/, 3],
  ];
  it.each(cases)('%s → BAD_USER_INPUT naming the line; no version, nothing stored', async (_name, format, body, message, line) => {
    const d = await newDataset(format);
    const put = await putFile(d.upload.url, body, d.upload.headers['content-type']);
    expect(put).toEqual({ status: 200, body: { uploadId: d.upload.id, bytes: Buffer.byteLength(body) } });
    const res = await gql(COMPLETE_UPLOAD, { uploadId: d.upload.id }, a);
    expect(errorOf(res)).toEqual({ code: 'BAD_USER_INPUT', field: 'file', message: expect.stringMatching(message) });
    expect(res.errors[0].extensions.line).toBe(line);
    expect(await versions(d.dataset.id)).toBe(0);
    expect(existsSync(await storedAt(d.upload.id))).toBe(false);
    // and completing again says nothing is uploaded (no half version appears)
    expect(errorOf(await gql(COMPLETE_UPLOAD, { uploadId: d.upload.id }, a))).toMatchObject({ code: 'BAD_USER_INPUT', field: 'uploadId' });
  });

  it('reads a datetime without a zone as UTC, whatever the process\'s time zone (nodes in other zones see the same instant)', () => {
    // A process of its own per zone (as a node in that zone), on the compiled parser nodes load.
    const parser = join(__dirname, '..', '..', 'dist', 'src', 'modules', 'training', 'dataset-parser.js');
    const script = `const { coerce } = require(${JSON.stringify(parser)});
      console.log(JSON.stringify(['2024-01-01 10:00', '2024-01-01T10:00:30.5', '2024-01-01T10:00:00+02:00', '2024-01-01'].map((t) => coerce(t, 'datetime'))));`;
    for (const tz of ['America/New_York', 'Asia/Tokyo', 'UTC']) {
      const out = execFileSync(process.execPath, ['-e', script], { env: { ...process.env, TZ: tz } }).toString();
      expect({ tz, values: JSON.parse(out) }).toEqual({
        tz, values: [Date.UTC(2024, 0, 1, 10), Date.UTC(2024, 0, 1, 10, 0, 30, 500), Date.UTC(2024, 0, 1, 8), Date.UTC(2024, 0, 1)],
      });
    }
  });

  it('creates a CSV dataset when the format is left out (the contract marks it optional)', async () => {
    const created = await gql(CREATE_DATASET, { input: { name: 'no format' } }, a);
    expect(created.errors).toBeUndefined();
    const { rows: [row] } = await owner.query('SELECT format FROM datasets WHERE id = $1', [created.data.createDataset.dataset.id]);
    expect(row.format).toBe('CSV');
    expect((await gql(CREATE_DATASET, { input: { name: 'bad format', format: 'XML' } }, a)).errors?.[0]?.extensions?.code).toBe('BAD_USER_INPUT');
  });

  it('refuses a file over the size limit while it streams (413), and a declared length over it at once', async () => {
    const d = await newDataset();
    const big = `a,b\n${'1,2\n'.repeat(MAX / 4 + 10)}`;
    expect((await putFile(d.upload.url, big, 'text/csv')).status).toBe(413);
    // streamed without a length (chunked): cut off when the limit passes
    const stream = new ReadableStream({
      start(c) {
        for (let i = 0; i < 30; i++) c.enqueue(new TextEncoder().encode('1,2\n'.repeat(250)));
        c.close();
      },
    });
    const res = await fetch(d.upload.url, { method: 'PUT', body: stream, headers: { 'content-type': 'text/csv' }, duplex: 'half' } as RequestInit).catch((e: Error) => e);
    if (!(res instanceof Error)) {
      expect(res.status).toBe(413);
      expect(((await res.json()) as any).error.code).toBe('TOO_LARGE');
    }
    expect(existsSync(await storedAt(d.upload.id))).toBe(false);
    // the URL is still usable for a file within the limit
    expect((await putFile(d.upload.url, 'a,b\n1,2\n', 'text/csv')).status).toBe(200);
  });
});

describe('signed upload URLs', () => {
  it('refuses a bad signature, a tampered expiry, an expired URL, a reused URL and a wrong content type', async () => {
    const d = await newDataset();
    const url = new URL(d.upload.url);
    const sig = url.searchParams.get('sig')!;
    const bad = new URL(url);
    bad.searchParams.set('sig', sig.replace(/^./, sig[0] === '0' ? '1' : '0'));
    expect(await putFile(bad.toString(), 'a\n1\n', 'text/csv')).toMatchObject({ status: 403, body: { error: { code: 'FORBIDDEN' } } });
    const later = new URL(url);
    later.searchParams.set('expires', String(Number(url.searchParams.get('expires')) + 3600));
    expect((await putFile(later.toString(), 'a\n1\n', 'text/csv')).status).toBe(403);
    // a correctly signed URL whose time is up
    const past = Math.floor(Date.now() / 1000) - 1;
    const expired = new URL(url);
    expired.searchParams.set('expires', String(past));
    expired.searchParams.set('sig', new UploadSigner(api.env.JWT_SECRET).sign(d.upload.id, past));
    expect(await putFile(expired.toString(), 'a\n1\n', 'text/csv')).toMatchObject({ status: 410, body: { error: { code: 'EXPIRED', message: expect.stringMatching(/expired/) } } });
    expect(await putFile(d.upload.url, '{"a":1}\n', 'application/x-ndjson')).toMatchObject({ status: 415, body: { error: { code: 'UNSUPPORTED_MEDIA_TYPE' } } });
    expect((await putFile(d.upload.url, 'a\n1\n', 'text/csv; charset=iso-8859-1')).status).toBe(415);
    expect((await putFile(d.upload.url, 'a\n1\n', 'text/csv; charset=utf-8')).status).toBe(200);
    expect(await putFile(d.upload.url, 'a\n2\n', 'text/csv')).toMatchObject({ status: 410, body: { error: { code: 'USED', message: expect.stringMatching(/already been used/) } } });
    expect(upload).toBeDefined();
  });

  it('answers complete before any PUT with BAD_USER_INPUT, and is idempotent after', async () => {
    const d = await newDataset('JSONL');
    expect(errorOf(await gql(COMPLETE_UPLOAD, { uploadId: d.upload.id }, a))).toMatchObject({ code: 'BAD_USER_INPUT', field: 'uploadId' });
    await putFile(d.upload.url, '{"x":1,"y":"a"}\n{"x":2,"y":"b"}\n', 'application/jsonl');
    const first = (await gql(COMPLETE_UPLOAD, { uploadId: d.upload.id }, a)).data.completeDatasetUpload;
    const second = (await gql(COMPLETE_UPLOAD, { uploadId: d.upload.id }, a)).data.completeDatasetUpload;
    expect(second).toEqual(first);
    expect(first).toMatchObject({ version: 1, rowCount: 2 });
    // different bytes: version 2
    const u2 = (await gql(CREATE_UPLOAD, { datasetId: d.dataset.id }, a)).data.createDatasetUpload;
    await putFile(u2.url, '{"x":3,"y":"c"}\n', 'application/x-ndjson');
    expect((await gql(COMPLETE_UPLOAD, { uploadId: u2.id }, a)).data.completeDatasetUpload).toMatchObject({ version: 2, rowCount: 1 });
    expect((await gql(DATASET, { id: d.dataset.id }, a)).data.dataset.versions.map((v: any) => v.version)).toEqual([2, 1]);
  });

  it('completes one upload called twice at once into one version, and keeps the bytes that version is stored under', async () => {
    // over 64 kB, so each call profiles on a worker thread and both are past the early check at once
    const rows = Array.from({ length: 4000 }, (_, i) => `${i},${(i * 7) % 13}.5,k${i % 5},note number ${i}`);
    const csv = `id,x,kind,note\n${rows.join('\n')}\n`;
    const big = await startTestApi({ DATA_DIR: dataDir });
    try {
      const t = await signUpTenant(big, 'Delta');
      const g: Gql = (q, v, tt) => big.gql(q, v, tt.token);
      const created = (await g(CREATE_DATASET, { input: { name: 'race', format: 'CSV' } }, t)).data.createDataset;
      expect((await putFile(created.upload.url, csv, 'text/csv')).status).toBe(200);
      const [r1, r2] = await Promise.all([g(COMPLETE_UPLOAD, { uploadId: created.upload.id }, t), g(COMPLETE_UPLOAD, { uploadId: created.upload.id }, t)]);
      expect(r1.errors).toBeUndefined();
      expect(r2.errors).toBeUndefined();
      expect(r2.data.completeDatasetUpload).toEqual(r1.data.completeDatasetUpload);
      expect(await versions(created.dataset.id)).toBe(1);
      const versionFile = async (id: string) => join(dataDir, 'artifacts', (await owner.query(`SELECT storage_key FROM dataset_versions WHERE id = $1`, [id])).rows[0].storage_key);
      // the version's file is still there: every training job on it reads it
      expect(existsSync(await versionFile(r1.data.completeDatasetUpload.id))).toBe(true);
      // the same bytes through another upload, completed twice at once too: both answer the same version;
      // that upload's copy goes (even under a call still profiling it), the version's stays
      const u2 = (await g(CREATE_UPLOAD, { datasetId: created.dataset.id }, t)).data.createDatasetUpload;
      expect((await putFile(u2.url, csv, 'text/csv')).status).toBe(200);
      const again = await Promise.all([g(COMPLETE_UPLOAD, { uploadId: u2.id }, t), g(COMPLETE_UPLOAD, { uploadId: u2.id }, t)]);
      expect(again.map((r) => r.errors)).toEqual([undefined, undefined]);
      expect(again.map((r) => r.data.completeDatasetUpload.id)).toEqual([r1.data.completeDatasetUpload.id, r1.data.completeDatasetUpload.id]);
      expect(existsSync(await storedAt(u2.id))).toBe(false);
      expect(await versions(created.dataset.id)).toBe(1);
      expect(existsSync(await versionFile(r1.data.completeDatasetUpload.id))).toBe(true);
    } finally {
      await big.close();
    }
  });
});

describe('profiles', () => {
  it('infers types, counts missing values, and estimates distinct counts past the exact cap (saying so)', async () => {
    const rows = Array.from({ length: 12_500 }, (_, i) => `${i},${i % 7 === 0 ? '' : (i % 10) + 0.5},${i % 2 === 0},k${i % 4},2024-01-${String(1 + (i % 28)).padStart(2, '0')}T10:00:00Z`);
    const csv = `id,x,flag,kind,at\n${rows.join('\n')}\n`;
    const big = await startTestApi({ DATA_DIR: dataDir });
    try {
      const t = await signUpTenant(big, 'Gamma');
      const up = await upload((q, v, tt) => big.gql(q, v, tt.token), t, 'wide', csv);
      const cols = await big.gql(`mutation($u: ID!) { completeDatasetUpload(uploadId: $u) { columns { name type missingCount distinctCount distinctApproximate min max mean } } }`, { u: up.uploadId }, t.token);
      const c = Object.fromEntries(cols.data.completeDatasetUpload.columns.map((x: any) => [x.name, x]));
      expect(c.id).toMatchObject({ type: 'INTEGER', min: 0, max: 12_499, distinctApproximate: true });
      expect(Math.abs(c.id.distinctCount - 12_500) / 12_500).toBeLessThan(0.05);
      expect(c.x).toMatchObject({ type: 'NUMBER', missingCount: Math.ceil(12_500 / 7), distinctCount: 10, distinctApproximate: false, min: 0.5, max: 9.5 });
      expect(c.flag).toMatchObject({ type: 'BOOLEAN', distinctCount: 2 });
      expect(c.kind).toMatchObject({ type: 'CATEGORY', distinctCount: 4 });
      expect(c.at).toMatchObject({ type: 'DATETIME', distinctCount: 28 });
    } finally {
      await big.close();
    }
  });

  it('profiles and reads keys named like Object.prototype members and "__proto__" as ordinary columns (JSONL and CSV)', async () => {
    const limits = { maxBytes: 1e6, maxColumns: 500 };
    const bytes = (text: string) => Readable.from([Buffer.from(text)]);
    const jsonl = '{"a":1,"constructor":"x","__proto__":"p"}\n{"a":2,"toString":"t"}\n{"a":3,"__proto__":"q","valueOf":5,"hasOwnProperty":true}\n';
    const j = await profileDataset(bytes(jsonl), 'JSONL', limits);
    expect(j.columns.map((c) => [c.name, c.type, c.missingCount, c.distinctCount])).toEqual([
      ['a', 'integer', 0, 3], ['constructor', 'category', 2, 1], ['__proto__', 'category', 1, 2],
      ['toString', 'category', 2, 1], ['valueOf', 'integer', 2, 1], ['hasOwnProperty', 'boolean', 2, 1],
    ]);
    const table = await readTable(bytes(jsonl), 'JSONL', j.columns.map((c) => ({ name: c.name, type: c.type })));
    expect(Object.fromEntries(table.columns)).toEqual({
      a: [1, 2, 3], constructor: ['x', null, null], ['__proto__']: ['p', null, 'q'], toString: [null, 't', null], valueOf: [null, null, 5], hasOwnProperty: [null, null, true],
    });
    const csv = 'a,__proto__,constructor\n1,x,\n2,,y\n3,x,z\n';
    const c = await profileDataset(bytes(csv), 'CSV', limits);
    expect(c.columns.map((x) => [x.name, x.missingCount, x.distinctCount])).toEqual([['a', 0, 3], ['__proto__', 1, 1], ['constructor', 1, 2]]);
    const ct = await readTable(bytes(csv), 'CSV', c.columns.map((x) => ({ name: x.name, type: x.type })));
    expect(ct.columns.get('__proto__')).toEqual(['x', null, 'x']);
    // and through the API: the version's profile has the columns
    const up = await upload(gql, a, 'proto', jsonl, 'JSONL');
    expect(up.res.errors).toBeUndefined();
    expect(up.res.data.completeDatasetUpload.columns.map((x: any) => [x.name, x.missingCount])).toEqual(
      [['a', 0], ['constructor', 2], ['__proto__', 1], ['toString', 2], ['valueOf', 2], ['hasOwnProperty', 2]]);
  });
});

describe('tenant isolation', () => {
  it('another tenant\'s dataset or upload is NOT_FOUND', async () => {
    const up = await upload(gql, a, 'mine', 'a,b\n1,2\n3,4\n');
    expect(errorOf(await gql(DATASET, { id: up.datasetId }, b)).code).toBe('NOT_FOUND');
    expect(errorOf(await gql(COMPLETE_UPLOAD, { uploadId: up.uploadId }, b)).code).toBe('NOT_FOUND');
    expect(errorOf(await gql(CREATE_UPLOAD, { datasetId: up.datasetId }, b)).code).toBe('NOT_FOUND');
    expect(errorOf(await gql(DATASET, { id: 'not-a-uuid' }, b)).code).toBe('NOT_FOUND');
    // RLS, the second layer: the API's role sees nothing of tenant A under tenant B's setting
    const { rows } = await owner.query(`SELECT tenant_id FROM datasets WHERE id = $1`, [up.datasetId]);
    expect(rows[0].tenant_id).toBe(a.tenantId);
  });

  it('needs the TRAIN scope to create datasets', async () => {
    const key = await api.gql(`mutation { createApiKey(input: { name: "r", scopes: [READ] }) { secret } }`, {}, a.token);
    const res = await api.gql(CREATE_DATASET, { input: { name: 'x', format: 'CSV' } }, key.data.createApiKey.secret);
    expect(errorOf(res).code).toBe('FORBIDDEN');
  });
});
