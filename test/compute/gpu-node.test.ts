import { spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Client } from 'pg';
import { signUpTenant } from '../support/api';
import { waitFor, type TestCluster } from '../support/cluster';
import { ownerClient } from '../support/db';
import { childEnv } from '../support/env';
import { CREATE_TRAINING, gqlOf, trainingCluster, upload, waitTraining } from '../training/support';

/**
 * A GPU node as the control plane sees it, on a machine without one: a stand-in `nvidia-smi` on
 * the agent's PATH reports two GPUs. The agent takes its device count and model from it, and
 * GPU work is placed on it (and billed as GPU); the work itself runs on the CPU code paths.
 */

const AGENT_MAIN = join(__dirname, '..', '..', 'dist', 'workers', 'node-agent', 'main.js');
let cluster: TestCluster;
let owner: Client;
let bin: string;
const agents: ChildProcess[] = [];

beforeAll(async () => {
  cluster = await trainingCluster([{ name: 'cpu-only', devices: 1 }]);
  owner = await ownerClient();
  bin = mkdtempSync(join(tmpdir(), 'nimbus-fake-nvidia-'));
  writeFileSync(join(bin, 'nvidia-smi'), '#!/bin/sh\n# --query-gpu=name --format=csv,noheader\necho "NVIDIA H200"\necho "NVIDIA H200"\n');
  chmodSync(join(bin, 'nvidia-smi'), 0o755);
});
afterAll(async () => {
  for (const a of agents) if (a.exitCode === null) a.kill('SIGKILL');
  await owner.end();
  await cluster.close();
  rmSync(bin, { recursive: true, force: true });
});

async function agent(args: string[], path: string): Promise<ChildProcess> {
  const env = await childEnv({ DATA_DIR: cluster.api.env.DATA_DIR, PATH: path });
  const child = spawn(process.execPath, [AGENT_MAIN, ...args], { env, stdio: ['ignore', 'ignore', 'pipe'] });
  agents.push(child);
  return child;
}

it('a --hardware GPU agent takes its devices and model from nvidia-smi; GPU training trials run there and bill as GPU', async () => {
  await agent(['--name', 'gpu-smi', '--hardware', 'GPU'], `${bin}:${process.env.PATH}`);
  await waitFor(() => cluster.cp.monitor.nodeInfo('gpu-smi') !== null, 20_000, 'the GPU node to register');
  expect(cluster.cp.monitor.nodeInfo('gpu-smi')).toMatchObject({ hardware: 'GPU', devices: 2, gpuModel: 'NVIDIA H200' });

  const t = await signUpTenant(cluster.api, 'GpuTrainer');
  const gql = gqlOf(cluster);
  const rows = Array.from({ length: 60 }, (_, i) => `${i % 7},${(i * 3) % 5},${(i % 7) + ((i * 3) % 5) > 5 ? 'big' : 'small'}`);
  const { datasetId } = await upload(gql, t, 'gpu-data', `a,b,label\n${rows.join('\n')}\n`);
  const created = await gql(CREATE_TRAINING, {
    input: { datasetId, modelName: 'on-gpu', task: 'TABULAR_CLASSIFICATION', targetColumn: 'label', algorithm: 'logistic_regression', hardware: 'GPU' },
  }, t);
  expect(created.errors).toBeUndefined();
  const job = await waitTraining(gql, t, created.data.createTrainingJob.id);
  expect(job.status).toBe('SUCCEEDED');
  const { rows: trials } = await owner.query(
    `SELECT j.node_id, l.hardware, l.billable FROM jobs j JOIN usage_ledger l ON l.job_id = j.id WHERE j.parent_id = $1`, [job.id]);
  expect(trials.length).toBeGreaterThan(0);
  for (const r of trials) expect(r).toEqual({ node_id: 'gpu-smi', hardware: 'GPU', billable: true });
});

it('--hardware GPU without nvidia-smi and without --devices refuses to start, saying why', async () => {
  // A PATH with nothing on it, so no real nvidia-smi either (the agent is started by absolute path).
  const empty = mkdtempSync(join(tmpdir(), 'nimbus-no-nvidia-'));
  const child = await agent(['--name', 'gpu-none', '--hardware', 'GPU'], empty);
  let stderr = '';
  child.stderr!.on('data', (c) => (stderr += c));
  const code = await new Promise<number | null>((r) => child.once('exit', r));
  expect(code).not.toBe(0);
  expect(stderr).toMatch(/nvidia-smi found no GPU; pass --devices/);
  expect(cluster.cp.monitor.nodeInfo('gpu-none')).toBeNull();
  rmSync(empty, { recursive: true, force: true });
});
