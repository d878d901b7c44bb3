import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { Worker } from 'node:worker_threads';
import { join } from 'node:path';
import { ArtifactNotFound, createArtifactStore, type ArtifactStoreConfig } from '../../src/modules/training/artifact-store';
import { DatasetFormatError, profileDataset } from '../../src/modules/training/dataset-parser';
import { INLINE_PROFILE_BYTES, MAX_PROFILE_THREADS, profileStored } from '../../src/modules/training/dataset-profiler';
import { signUpTenant, startTestApi, type TestApi } from '../support/api';
import { errorOf, upload } from './support';

/** Large dataset files are profiled on a worker thread, off the API's event loop, with the same result and errors. */

const dataDir = mkdtempSync(join(tmpdir(), 'nimbus-profiler-'));
const config: ArtifactStoreConfig = { ARTIFACT_STORE: 'local', DATA_DIR: dataDir };
const store = createArtifactStore(config);
const limits = { maxBytes: 50 * 1024 * 1024, maxColumns: 100 };
let api: TestApi;

beforeAll(async () => {
  api = await startTestApi({ DATA_DIR: dataDir });
});
afterAll(async () => {
  await api.close();
  rmSync(dataDir, { recursive: true, force: true });
});

/** n rows of mixed columns: an id, a float, a category, a boolean-like label, free text, some missing values. */
function csv(n: number, broken?: number): string {
  const rows = ['id,price,city,label,note'];
  for (let i = 1; i <= n; i++) {
    if (i === broken) rows.push(`${i},1.5`); // too few fields
    else rows.push(`${i},${(i * 7) % 101}.25,${['oslo', 'rome', 'lima'][i % 3]},${i % 2 ? 'yes' : 'no'},${i % 10 === 0 ? '' : `note number ${i}`}`);
  }
  return `${rows.join('\n')}\n`;
}

async function put(key: string, text: string): Promise<number> {
  const bytes = Buffer.from(text);
  await store.put(key, bytes);
  return bytes.length;
}

describe('profileStored', () => {
  it('profiles a large file on a worker thread, exactly as inline', async () => {
    const size = await put('datasets/big.csv', csv(20_000));
    expect(size).toBeGreaterThan(10 * INLINE_PROFILE_BYTES);
    const threaded = await profileStored(store, config, 'datasets/big.csv', size, 'CSV', limits);
    expect(threaded.onThread).toBe(true);
    const inline = await profileDataset(await store.stream('datasets/big.csv'), 'CSV', limits);
    const { onThread: _, ...profile } = threaded;
    expect(profile).toEqual(inline);
    expect(profile.rowCount).toBe(20_000);
    expect(profile.columns.find((c) => c.name === 'note')!.missingCount).toBe(2_000);
  });

  it('profiles a small file inline', async () => {
    const size = await put('datasets/small.csv', csv(50));
    const p = await profileStored(store, config, 'datasets/small.csv', size, 'CSV', limits);
    expect(p).toMatchObject({ onThread: false, rowCount: 50 });
  });

  it('brings a malformed file\'s error (with its line) and a missing file back from the thread', async () => {
    const size = await put('datasets/broken.csv', csv(20_000, 15_000));
    const err = await profileStored(store, config, 'datasets/broken.csv', size, 'CSV', limits).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(DatasetFormatError);
    expect(err).toMatchObject({ line: 15_001, message: expect.stringMatching(/expected 5 fields/) });
    const missing = await profileStored(store, config, 'datasets/nope.csv', 10 * INLINE_PROFILE_BYTES, 'CSV', limits).catch((e: unknown) => e);
    expect(missing).toBeInstanceOf(ArtifactNotFound);
  });

  it('runs at most MAX_PROFILE_THREADS threads at once; the others wait and all finish', async () => {
    const size = await put('datasets/many.csv', csv(5_000));
    // Count live profiling threads: each registers an 'exit' listener when it starts, which runs when it ends.
    const original = Worker.prototype.once;
    let live = 0;
    let peak = 0;
    const spy = jest.spyOn(Worker.prototype, 'once').mockImplementation(function (this: Worker, event: string | symbol, fn: (...a: any[]) => void) {
      if (event !== 'exit') return original.call(this, event, fn);
      peak = Math.max(peak, ++live);
      return original.call(this, event, (...a: any[]) => {
        live--;
        fn(...a);
      });
    });
    try {
      const all = await Promise.all(Array.from({ length: 5 }, () => profileStored(store, config, 'datasets/many.csv', size, 'CSV', limits)));
      expect(all.map((p) => [p.onThread, p.rowCount])).toEqual(Array(5).fill([true, 5_000]));
    } finally {
      spy.mockRestore();
    }
    expect(peak).toBe(MAX_PROFILE_THREADS);
  });

  it('profiles a large upload through the API into a version', async () => {
    const t = await signUpTenant(api, 'Profiled');
    const gql = (q: string, v: Record<string, unknown>, tt: typeof t) => api.gql(q, v, tt.token);
    const ok = await upload(gql, t, 'big', csv(10_000));
    expect(ok.res.errors).toBeUndefined();
    expect(ok.res.data.completeDatasetUpload).toMatchObject({ rowCount: 10_000, version: 1 });
    const bad = await upload(gql, t, 'broken', csv(10_000, 9_000));
    expect(errorOf(bad.res)).toMatchObject({ code: 'BAD_USER_INPUT', field: 'file' });
    expect(bad.res.errors![0].extensions!.line).toBe(9_001);
  });
});
