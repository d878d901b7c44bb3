import { execFileSync } from 'node:child_process';
import { parseArgs } from 'node:util';
import { hostname } from 'node:os';
import { loadEnvOrExit } from '../../src/bootstrap';
import { createLogger } from '../../src/platform/logger';
import { NodeAgent } from './agent';
import { createRuntimeHost } from './runtimes';
import { createArtifactStore } from '../../src/modules/training/artifact-store';

/** GPUs as nvidia-smi reports them; null when there is no NVIDIA driver on this machine. */
export function detectGpus(): { count: number; model: string } | null {
  try {
    const out = execFileSync('nvidia-smi', ['--query-gpu=name', '--format=csv,noheader'], { encoding: 'utf8', timeout: 5000 });
    const names = out.split('\n').map((l) => l.trim()).filter(Boolean);
    return names.length ? { count: names.length, model: names[0] } : null;
  } catch {
    return null;
  }
}

/**
 * `npm run node-agent -- --name gpu-a --hardware GPU --devices 2`. With --hardware GPU the device
 * count and model come from nvidia-smi when present. The agent needs only REDIS_URL/REDIS_PREFIX.
 */
export async function main(argv = process.argv.slice(2)): Promise<NodeAgent> {
  const { values } = parseArgs({
    args: argv,
    options: {
      name: { type: 'string', default: `${hostname()}-${process.pid}` },
      hardware: { type: 'string', default: 'CPU' },
      devices: { type: 'string' },
      threads: { type: 'string' },
      warm: { type: 'string' },
    },
  });
  const env = loadEnvOrExit();
  const log = createLogger(env.LOG_LEVEL, 'node-agent');
  // Trials and model.predict reach datasets and models only through the artifact store (DATA_DIR, or
  // ARTIFACT_STORE=s3 with S3_*), which each worker thread builds from this environment: fail fast here.
  const store = createArtifactStore(env);
  const requested = (values.hardware ?? 'CPU').toUpperCase();
  // A typo must not make a GPU machine register as a 2-device CPU node.
  if (requested !== 'CPU' && requested !== 'GPU') throw new Error(`--hardware must be CPU or GPU, not ${values.hardware}`);
  const hardware: 'CPU' | 'GPU' = requested;
  const gpus = hardware === 'GPU' ? detectGpus() : null;
  if (hardware === 'GPU' && !gpus && !values.devices) throw new Error('--hardware GPU: nvidia-smi found no GPU; pass --devices to override');
  const devices = Number(values.devices ?? gpus?.count ?? 2);
  if (!Number.isInteger(devices) || devices < 1) throw new Error('--devices must be a positive integer');
  const runtimes = createRuntimeHost({ threads: values.threads ? Number(values.threads) : undefined });
  const agent = new NodeAgent({
    name: values.name!, hardware, devices, gpuModel: gpus?.model ?? null, redisUrl: env.REDIS_URL, prefix: env.REDIS_PREFIX,
    runtimes, log: (msg, extra) => log.info(extra ?? {}, msg),
  });
  await agent.start();
  log.info({ artifactStore: store.kind }, 'artifact store');
  // A model that fails to load now is loaded (and its failure reported) by its first job instead.
  if (values.warm) {
    void runtimes.warm(values.warm === 'all' ? undefined : values.warm.split(',')).catch((err: Error) => log.warn({ err: err.message }, 'warming models failed'));
  }
  const shutdown = async () => {
    await agent.stop();
    await runtimes.close();
    process.exit(0);
  };
  process.once('SIGINT', shutdown);
  process.once('SIGTERM', shutdown);
  return agent;
}

if (require.main === module) {
  main().catch((err) => {
    console.error(err instanceof Error ? err.message : err);
    process.exit(1);
  });
}
