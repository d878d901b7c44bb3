import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createLogger } from '../../src/platform/logger';
import { startControlPlane, type ControlPlane } from '../../src/modules/compute/control-plane/control-plane';
import type { ControlPlaneSettings } from '../../src/modules/compute/control-plane/context';
import { attachTraining } from '../../src/modules/training/training.orchestrator';
import { startTestApi, type TestApi } from './api';
import { childEnv } from './env';

const AGENT_MAIN = join(__dirname, '..', '..', 'dist', 'workers', 'node-agent', 'main.js');

export interface TestCluster {
  api: TestApi;
  cp: ControlPlane;
  agents: Map<string, ChildProcess>;
  startAgent(name: string, devices?: number): Promise<ChildProcess>;
  kill(name: string, signal?: NodeJS.Signals): Promise<void>;
  close(): Promise<void>;
}

export const FAST_SETTINGS: Partial<ControlPlaneSettings> = {
  reconcileIntervalMs: 300, redispatchAfterMs: 2000, orphanAfterMs: 3000, webhookBackoffMs: 100, webhookMaxAttempts: 4, abandonedEventsAfterMs: 500,
  webhookSweepIntervalMs: 300, webhookSweepLagMs: 1000, quotaCheckIntervalMs: 500,
};

/** A whole system for integration tests: API and control plane in-process, node agents as real processes. */
export async function startCluster(opts: {
  agents?: Array<{ name: string; devices?: number }>;
  settings?: Partial<ControlPlaneSettings>;
  apiOverrides?: Record<string, string>;
  /** A Redis other than the shared one (e.g. a private server a test restarts), for the API, control plane and agents. */
  redisUrl?: string;
  /** Job updates reach the API only through Redis, as when API and control plane run as separate processes. */
  separateProcesses?: boolean;
} = {}): Promise<TestCluster> {
  const redisOverride: Record<string, string> = opts.redisUrl ? { REDIS_URL: opts.redisUrl } : {};
  // API, control plane and agents share one artifact store (vision inputs, datasets, models): a
  // temporary one, removed on close, unless the caller brings its own DATA_DIR.
  const ownDataDir = opts.apiOverrides?.DATA_DIR ? null : mkdtempSync(join(tmpdir(), 'nimbus-cluster-test-'));
  const api = await startTestApi({ ...(ownDataDir ? { DATA_DIR: ownDataDir } : {}), ...opts.apiOverrides, ...redisOverride });
  const agentEnv = { ...redisOverride, DATA_DIR: api.env.DATA_DIR };
  const cp = await startControlPlane(api.env, {
    log: createLogger(process.env.TEST_CP_LOG ?? 'silent'), metrics: api.app.metrics, settings: { ...FAST_SETTINGS, ...opts.settings, webhookAllowPrivate: true },
    // As `npm start` runs them: the API's waiters are answered in-process (Announcer, JobUpdateBus).
    localBus: opts.separateProcesses ? undefined : api.app.bus,
  });
  const training = attachTraining(cp, api.app, { tickMs: 500 });
  const agents = new Map<string, ChildProcess>();
  const cluster: TestCluster = {
    api, cp, agents,
    async startAgent(name, devices = 1) {
      const child = spawn(process.execPath, [AGENT_MAIN, '--name', name, '--hardware', 'CPU', '--devices', String(devices)], {
        env: await childEnv(agentEnv), stdio: ['ignore', 'ignore', 'inherit'],
      });
      agents.set(name, child);
      await waitFor(() => cp.monitor.nodeInfo(name) !== null, 20_000, `node ${name} to register`);
      return child;
    },
    async kill(name, signal = 'SIGKILL') {
      const child = agents.get(name);
      if (!child || child.exitCode !== null) return;
      const exited = new Promise((r) => child.once('exit', r));
      child.kill(signal);
      await exited;
      agents.delete(name);
    },
    async close() {
      await Promise.all([...agents.keys()].map((n) => cluster.kill(n, 'SIGKILL')));
      await training.stop();
      await cp.stop();
      await api.close();
      if (ownDataDir) rmSync(ownDataDir, { recursive: true, force: true });
    },
  };
  for (const a of opts.agents ?? []) await cluster.startAgent(a.name, a.devices);
  return cluster;
}

export async function waitFor(cond: () => boolean | Promise<boolean>, timeoutMs = 10_000, what = 'condition'): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (Date.now() < end) {
    if (await cond()) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`timed out waiting for ${what}`);
}
