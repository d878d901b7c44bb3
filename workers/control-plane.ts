import 'reflect-metadata';
import { loadEnvOrExit } from '../src/bootstrap';
import { prepareDatabase } from '../src/platform/db/prepare';
import { Metrics } from '../src/platform/http/metrics';
import { createLogger } from '../src/platform/logger';
import { startControlPlane } from '../src/modules/compute/control-plane/control-plane';

/** `npm run control-plane`: admitter, completion recorder, node monitor, reconciler, webhook sender. */
async function main() {
  const env = loadEnvOrExit();
  const log = createLogger(env.LOG_LEVEL, 'control-plane');
  await prepareDatabase(env, (msg) => log.info(msg));
  const cp = await startControlPlane(env, { log, metrics: new Metrics() });
  log.info('control plane running');
  const shutdown = async () => {
    await cp.stop();
    process.exit(0);
  };
  process.once('SIGINT', shutdown);
  process.once('SIGTERM', shutdown);
}

main().catch((err) => {
  console.error(err instanceof Error ? err.message : err);
  process.exit(1);
});
