import 'reflect-metadata';
import { loadEnvOrExit } from '../src/bootstrap';
import { prepareDatabase } from '../src/platform/db/prepare';
import { Metrics } from '../src/platform/http/metrics';
import { serveMetrics } from '../src/platform/http/metrics-server';
import { createLogger } from '../src/platform/logger';
import { startControlPlane } from '../src/modules/compute/control-plane/control-plane';
import { withLocalStripe } from '../src/modules/billing/stripe-gateway';
import { createApp } from '../src/app';
import { attachTraining } from '../src/modules/training/training.orchestrator';

/** `npm run control-plane`: admitter, completion recorder, node monitor, reconciler, webhook sender. */
async function main() {
  const { env } = await withLocalStripe(loadEnvOrExit());
  const log = createLogger(env.LOG_LEVEL, 'control-plane');
  await prepareDatabase(env, (msg) => log.info(msg));
  const metrics = new Metrics();
  const cp = await startControlPlane(env, { log, metrics });
  // Training orchestration submits trials through the API's services (quota, billing guards, RLS).
  const app = await createApp(env, { log });
  const training = attachTraining(cp, app);
  const server = await serveMetrics(metrics.registry, { port: env.METRICS_PORT, host: env.HOST, token: env.METRICS_TOKEN });
  log.info({ metrics: `${server.url}/metrics` }, 'control plane running');
  const shutdown = async () => {
    await server.close();
    await training.stop();
    await cp.stop();
    await app.close();
    process.exit(0);
  };
  process.once('SIGINT', shutdown);
  process.once('SIGTERM', shutdown);
}

main().catch((err) => {
  console.error(err instanceof Error ? err.message : err);
  process.exit(1);
});
