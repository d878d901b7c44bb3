import type { Client } from 'pg';
import { signUpTenant, type TestTenant } from '../support/api';
import { waitFor, type TestCluster } from '../support/cluster';
import { ownerClient } from '../support/db';
import { flowers, toCsv } from '../fixtures/training-data';
import { CREATE_TRAINING, TRAINING_JOB, gqlOf, trainingCluster, upload, waitTraining, type Gql } from './support';

let cluster: TestCluster;
let owner: Client;
let gql: Gql;
let a: TestTenant;
beforeAll(async () => {
  cluster = await trainingCluster([{ name: 'cpu-a', devices: 1 }, { name: 'cpu-b', devices: 1 }]);
  gql = gqlOf(cluster);
  owner = await ownerClient();
  a = await signUpTenant(cluster.api, 'Alpha');
});
afterAll(async () => {
  await owner.end();
  await cluster.close();
});

describe('a node lost mid-trial', () => {
  it('resumes the trial from its checkpoint on the other node; the job succeeds; the lost attempt is recorded unbilled', async () => {
    const up = await upload(gql, a, 'flowers-big', toCsv(flowers(2000, 5)));
    const res = await gql(CREATE_TRAINING, {
      input: {
        datasetVersionId: up.res.data.completeDatasetUpload.id, modelName: 'resilient', task: 'TABULAR_CLASSIFICATION', targetColumn: 'species',
        seed: 5, algorithm: 'mlp', hyperparameters: { epochs: 40, batchSize: 32, hiddenUnits: 32, layers: 1, checkpointEvery: 4 },
      },
    }, a);
    expect(res.errors).toBeUndefined();
    const id = res.data.createTrainingJob.id;
    let trial: any;
    await waitFor(async () => {
      trial = (await gql(TRAINING_JOB, { id }, a)).data.trainingJob.trials[0];
      return !!trial?.logs.some((l: string) => /checkpoint saved at step (8|1\d|2\d)/.test(l));
    }, 60_000, 'a checkpoint');
    const { rows: [row] } = await owner.query(`SELECT node_id, attempt, status FROM jobs WHERE id = $1`, [trial.id]);
    expect(row).toMatchObject({ attempt: 1, status: 'RUNNING' });
    await cluster.kill(row.node_id, 'SIGKILL');

    const job = await waitTraining(gql, a, id, 120_000);
    expect(job.status).toBe('SUCCEEDED');
    const t = job.trials[0];
    expect(t).toMatchObject({ status: 'SUCCEEDED', attempt: 2 });
    const resumed = t.logs.map((l: string) => /resumed from checkpoint at step (\d+)/.exec(l)).find(Boolean);
    expect(resumed).toBeTruthy();
    expect(Number(resumed![1])).toBeGreaterThan(0);
    expect(job.logs.some((l: string) => /resumed from checkpoint at step \d+/.test(l))).toBe(true);
    const { rows: [after] } = await owner.query(`SELECT node_id FROM jobs WHERE id = $1`, [t.id]);
    expect(after.node_id).not.toBe(row.node_id);
    expect(t.metrics.accuracy).toBeGreaterThan(t.metrics.baselineAccuracy + 0.3);

    // The ledger: the lost attempt non-billable (NODE_LOST), the successful one billable, once each.
    const { rows } = await owner.query(`SELECT attempt, billable, reason, node_id, billable_ms::int AS ms FROM usage_ledger WHERE job_id = $1 ORDER BY attempt`, [t.id]);
    expect(rows).toEqual([
      { attempt: 1, billable: false, reason: 'NODE_LOST', node_id: row.node_id, ms: expect.any(Number) },
      { attempt: 2, billable: true, reason: null, node_id: after.node_id, ms: expect.any(Number) },
    ]);
    expect(rows[0].ms).toBeGreaterThan(0);
    expect(job.usage.seconds).toBeCloseTo(rows[1].ms / 1000, 3);
  });
});
