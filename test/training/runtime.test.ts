/**
 * The training runtime in-process (no cluster): determinism, checkpoint/resume equivalence,
 * transforms fitted on the training split only, metrics, and both artifact stores.
 */
import { createServer, type Server } from 'node:http';
import { mkdtempSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { ArtifactNotFound, LocalArtifactStore, S3ArtifactStore, checkKey, type ArtifactStore } from '../../src/modules/training/artifact-store';
import { profileDataset } from '../../src/modules/training/dataset-parser';
import { defaultHyperparameters, planTrial, type Hyperparameters, type Task, type TrialSpec } from '../../src/modules/training/training.contract';
import { auc, classificationMetrics, forecastMetrics, regressionMetrics } from '../../workers/node-agent/runtimes/training/metrics';
import { predictModel } from '../../workers/node-agent/runtimes/training/predict';
import { setArtifactStore } from '../../workers/node-agent/runtimes/training/store';
import { applyPipeline, fitPipeline } from '../../workers/node-agent/runtimes/training/transforms';
import { runTrial } from '../../workers/node-agent/runtimes/training/trial';
import type { JobContext } from '../../workers/node-agent/runtimes/types';
import { flowers, houses, toCsv } from '../fixtures/training-data';

const store = new LocalArtifactStore(mkdtempSync(join(tmpdir(), 'nimbus-runtime-')));
beforeAll(() => setArtifactStore(store));
afterAll(() => setArtifactStore(null));

const ctx = (over: Partial<JobContext> = {}): JobContext & { lines: string[] } => {
  const lines: string[] = [];
  return { signal: new AbortController().signal, reportProgress: () => undefined, log: (l) => lines.push(l), lines, ...over };
};

let n = 0;
async function spec(task: Task, csv: string, algorithm: string, extra: Partial<TrialSpec> & { hp?: Hyperparameters } = {}): Promise<TrialSpec> {
  const key = `tenants/t/datasets/d${n++}.csv`;
  await store.put(key, csv);
  const p = await profileDataset(Readable.from([Buffer.from(csv)]), 'CSV', { maxBytes: 1e8, maxColumns: 500 });
  const { hp, ...rest } = extra;
  return {
    task, trial: 0, algorithm, hyperparameters: { ...defaultHyperparameters(task, algorithm), ...hp }, seed: 42, metric: 'f1Macro', tenantId: 't', trainingJobId: 'j',
    dataset: { versionId: 'v', storageKey: key, format: 'CSV', columns: p.columns.map((c) => ({ name: c.name, type: c.type })) },
    targetColumn: 'species', transforms: [], holdout: 0.2, artifactKey: `tenants/t/m/${n}.json`, checkpointKey: `tenants/t/c/${n}.json`, ...rest,
  };
}

describe('trials', () => {
  it('are deterministic given a seed', async () => {
    const csv = toCsv(flowers(200));
    for (const algorithm of ['xgboost', 'mlp', 'logistic_regression']) {
      const s1 = await spec('TABULAR_CLASSIFICATION', csv, algorithm);
      const s2 = { ...s1, artifactKey: `${s1.artifactKey}.2` };
      const [o1, o2] = [await runTrial(s1, ctx()), await runTrial(s2, ctx())];
      expect(o2.metrics).toEqual(o1.metrics);
      const [m1, m2] = [JSON.parse((await store.get(s1.artifactKey)).toString()), JSON.parse((await store.get(s2.artifactKey)).toString())];
      expect(m2.model).toEqual(m1.model);
    }
  });

  it('resume from a checkpoint to exactly the model an uninterrupted run gives (MLP epochs, xgboost rounds)', async () => {
    const cases: Array<[Task, string, string, Hyperparameters, string]> = [
      ['TABULAR_CLASSIFICATION', toCsv(flowers(300)), 'mlp', { epochs: 8, checkpointEvery: 2 }, 'species'],
      ['TABULAR_REGRESSION', toCsv(houses(300)), 'xgboost', { rounds: 60, checkpointEvery: 20 }, 'price'],
    ];
    for (const [task, csv, algorithm, hp, target] of cases) {
      const interrupted = await spec(task, csv, algorithm, { hp, targetColumn: target, metric: 'rmse' });
      const controller = new AbortController();
      const c1 = ctx({ signal: controller.signal });
      c1.log = (l) => {
        c1.lines.push(l);
        if (/checkpoint saved at step 2\b/.test(l)) controller.abort();
      };
      await expect(runTrial(interrupted, c1)).rejects.toMatchObject({ code: 'CANCELED' });
      expect(await store.exists(interrupted.checkpointKey)).toBe(true);
      const c2 = ctx();
      const resumed = await runTrial(interrupted, c2);
      expect(c2.lines.some((l) => /^resumed from checkpoint at step 2\b/.test(l))).toBe(true);
      expect(resumed.resumedFromStep).toBe(2);
      expect(await store.exists(interrupted.checkpointKey)).toBe(false); // removed once the model is written
      const fresh = await runTrial({ ...interrupted, artifactKey: `${interrupted.artifactKey}.fresh`, checkpointKey: `${interrupted.checkpointKey}.fresh` }, ctx());
      expect(fresh.resumedFromStep).toBe(0);
      expect(resumed.metrics).toEqual(fresh.metrics);
      const model = async (k: string) => JSON.parse((await store.get(k)).toString()).model;
      expect(await model(interrupted.artifactKey)).toEqual(await model(`${interrupted.artifactKey}.fresh`));
    }
  });

  it('ignores a checkpoint of another configuration', async () => {
    const s = await spec('TABULAR_CLASSIFICATION', toCsv(flowers(120)), 'mlp', { hp: { epochs: 4, checkpointEvery: 2 } });
    await store.put(s.checkpointKey, JSON.stringify({ fingerprint: 'other', step: 3, state: {} }));
    const c = ctx();
    const out = await runTrial(s, c);
    expect(out.resumedFromStep).toBe(0);
  });

  it('fits transforms on the training split only, and prediction applies the same ones', async () => {
    const rows = [{ x: 1, c: 'a' }, { x: 3, c: 'b' }, { x: 1000, c: 'z' }];
    const table = new Map<string, Array<number | string | null>>([['x', rows.map((r) => r.x)], ['c', rows.map((r) => r.c)]]);
    const p = fitPipeline(table, [0, 1], [{ name: 'x', type: 'number' }, { name: 'c', type: 'category' }], [], { standardize: true, textMaxFeatures: 10, textNgram: 1, maxCategories: 5 });
    // mean 2 and std 1 come from rows 0 and 1: the held-out 1000 and 'z' never leak in
    expect(p.encoders[0]).toMatchObject({ kind: 'numeric', center: 2, scale: 1 });
    expect(p.encoders[1]).toMatchObject({ kind: 'onehot', categories: ['a', 'b'], other: false });
    expect(applyPipeline(p, table, [2])).toEqual([[998, 0, 0]]);
  });

  it('imputes a CONSTANT as a value of its column\'s type: booleans from true/false (any case) or 1/0, datetimes from a date string; never NaN', () => {
    const opts = { standardize: false, textMaxFeatures: 10, textNgram: 1, maxCategories: 5 };
    const at = Date.UTC(2024, 0, 10);
    const table = new Map<string, Array<number | string | boolean | null>>([['flag', [true, null, false]], ['at', [at, null, at]]]);
    const cols = [{ name: 'flag', type: 'boolean' as const }, { name: 'at', type: 'datetime' as const }];
    const fit = (flag: string | number | boolean, date: string | number, extra: Array<{ type: 'ONE_HOT'; columns: string[] }> = []) => {
      const p = fitPipeline(table, [0, 1, 2], cols, [
        { type: 'IMPUTE', columns: ['flag'], strategy: 'CONSTANT', value: flag },
        { type: 'IMPUTE', columns: ['at'], strategy: 'CONSTANT', value: date },
        { type: 'DATE_PARTS', columns: ['at'], parts: ['year', 'month', 'day'] },
        ...extra,
      ], opts);
      const X = applyPipeline(p, table);
      expect(X.flat().every(Number.isFinite)).toBe(true);
      return { p, X };
    };
    for (const [value, fill] of [['true', 1], ['TRUE', 1], ['False', 0], [true, 1], [false, 0], [1, 1], [0, 0]] as const) {
      const { p, X } = fit(value, '2023-06-15');
      expect(p.encoders[0]).toMatchObject({ kind: 'numeric', fill });
      expect(X[1]![0]).toBe(fill);
    }
    const { p, X } = fit('true', '2023-06-15');
    expect(p.encoders[1]).toMatchObject({ kind: 'dateparts', fill: Date.UTC(2023, 5, 15) });
    expect(X[1]!.slice(1)).toEqual([2023, 6, 15]);
    // one-hot of a boolean: the constant fills the category of that boolean
    const oneHot = fit('TRUE', '2023-06-15', [{ type: 'ONE_HOT', columns: ['flag'] }]);
    expect(oneHot.p.encoders[0]).toMatchObject({ kind: 'onehot', fill: 'true' });
    expect(oneHot.X[1]!.slice(0, 2)).toEqual(oneHot.X[0]!.slice(0, 2));
    // a constant the API now refuses (an older job's): the column's default fill, not NaN or 1970
    const old = fit('yes', 5);
    expect(old.p.encoders[0]).toMatchObject({ kind: 'numeric', fill: 0 });
    expect(old.p.encoders[1]).toMatchObject({ kind: 'dateparts', fill: at });
  });

  it('predicts through the cached loaded model, and reports a missing artifact as MODEL_ERROR', async () => {
    const s = await spec('TABULAR_CLASSIFICATION', toCsv(flowers(150)), 'decision_tree');
    const out = await runTrial(s, ctx());
    const input = { modelVersionId: 'mv', version: 3, artifactKey: out.artifactKey, task: 'TABULAR_CLASSIFICATION' as const, rows: [{ petal_length: 6, petal_width: 2, sepal_length: 6, colour: 'purple', measured: '2024-03-01' }] };
    const r = await predictModel(input, ctx());
    expect(r).toMatchObject({ modelVersion: { id: 'mv', version: 3 }, predictions: [{ label: 'virginica' }] });
    await expect(predictModel({ ...input, artifactKey: 'tenants/t/m/missing.json' }, ctx())).rejects.toMatchObject({ code: 'MODEL_ERROR' });
  });

  it('plans AutoML trials: every algorithm first with its defaults, then seeded random points', () => {
    const algos = ['xgboost', 'mlp', 'decision_tree'];
    const plan = Array.from({ length: 6 }, (_, i) => planTrial('TABULAR_CLASSIFICATION', algos, 9, i));
    expect(plan.map((p) => p.algorithm)).toEqual([...algos, ...algos]);
    expect(plan[0]!.hyperparameters).toEqual(defaultHyperparameters('TABULAR_CLASSIFICATION', 'xgboost'));
    expect(plan[3]!.hyperparameters).not.toEqual(plan[0]!.hyperparameters);
    expect(planTrial('TABULAR_CLASSIFICATION', algos, 9, 4)).toEqual(plan[4]);
  });
});

describe('metrics', () => {
  it('computes classification, regression and forecast metrics', () => {
    expect(auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])).toBeCloseTo(0.75);
    const m = classificationMetrics([0, 1, 1, 0], [[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]], 2);
    expect(m).toMatchObject({ accuracy: 0.5, f1Macro: 0.5, auc: 0.75 });
    expect(regressionMetrics([1, 2, 3], [1, 2, 4])).toMatchObject({ mae: 0.333333, r2: 0.5 });
    expect(forecastMetrics([100, 200], [110, 180])).toMatchObject({ mape: 10, rmse: expect.any(Number) });
  });
});

describe('artifact stores', () => {
  async function exercise(s: ArtifactStore) {
    await s.put('tenants/a/x/one.json', '{"a":1}');
    expect((await s.get('tenants/a/x/one.json')).toString()).toBe('{"a":1}');
    expect(await s.put('tenants/a/x/two.csv', Readable.from([Buffer.from('a,b\n'), Buffer.from('1,2\n')]))).toEqual({ bytes: 8 });
    const chunks: Buffer[] = [];
    for await (const c of await s.stream('tenants/a/x/two.csv')) chunks.push(c as Buffer);
    expect(Buffer.concat(chunks).toString()).toBe('a,b\n1,2\n');
    expect(await s.exists('tenants/a/x/two.csv')).toBe(true);
    await s.delete('tenants/a/x/two.csv');
    await s.delete('tenants/a/x/two.csv');
    expect(await s.exists('tenants/a/x/two.csv')).toBe(false);
    await expect(s.get('tenants/a/x/nope')).rejects.toBeInstanceOf(ArtifactNotFound);
    await expect(s.put('../escape', 'x')).rejects.toThrow(/invalid artifact key/);
  }

  it('local: files under the root, atomic writes', async () => {
    await exercise(new LocalArtifactStore(mkdtempSync(join(tmpdir(), 'nimbus-store-'))));
    expect(() => checkKey('a/../b')).toThrow();
    expect(() => checkKey('/abs')).toThrow();
  });

  it('S3: the same behaviour against an S3-compatible server (path-style)', async () => {
    const objects = new Map<string, Buffer>();
    const seen: string[] = [];
    const server: Server = createServer((req, res) => {
      const key = decodeURIComponent(new URL(req.url!, 'http://x').pathname);
      seen.push(`${req.method} ${key}`);
      const body: Buffer[] = [];
      req.on('data', (c) => body.push(c));
      req.on('end', () => {
        if (req.method === 'PUT') {
          objects.set(key, Buffer.concat(body));
          res.writeHead(200, { etag: '"e"' }).end();
        } else if (req.method === 'GET' || req.method === 'HEAD') {
          const o = objects.get(key);
          if (!o) res.writeHead(404, { 'content-type': 'application/xml' }).end(req.method === 'GET' ? '<Error><Code>NoSuchKey</Code><Message>no</Message></Error>' : undefined);
          else res.writeHead(200, { 'content-length': o.length, etag: '"e"' }).end(req.method === 'GET' ? o : undefined);
        } else if (req.method === 'DELETE') {
          objects.delete(key);
          res.writeHead(204).end();
        } else res.writeHead(405).end();
      });
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    try {
      const s3 = new S3ArtifactStore({
        bucket: 'nimbus', endpoint: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, region: 'us-east-1',
        accessKeyId: 'minio', secretAccessKey: 'minio-secret', forcePathStyle: true,
      });
      await exercise(s3);
      expect(seen).toContain('PUT /nimbus/tenants/a/x/one.json');
    } finally {
      server.close();
    }
  });
});
