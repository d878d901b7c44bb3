import 'reflect-metadata';
import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { loadEnvOrExit, startApi } from '../src/bootstrap';
import { startControlPlane } from '../src/modules/compute/control-plane/control-plane';
import { withLocalStripe } from '../src/modules/billing/stripe-gateway';
import { attachTraining } from '../src/modules/training/training.orchestrator';

/**
 * `npm start`: the whole system on one machine — the API (migrations, demo seed), the control
 * plane in the same process, and one local CPU node agent as a child process (as on a real node,
 * it shares nothing with the API but Redis).
 */
async function main() {
  // With no Stripe configured, billing runs against the local fake Stripe started here.
  const { env } = await withLocalStripe(loadEnvOrExit());
  const { app } = await startApi(env);
  const cp = await startControlPlane(env, { log: app.log.child({ name: 'control-plane' }), metrics: app.metrics, localBus: app.bus });
  const training = attachTraining(cp, app);
  const agent = startLocalAgent();
  const shutdown = async () => {
    agent.kill('SIGTERM');
    await training.stop();
    await cp.stop();
    process.exit(0);
  };
  process.removeAllListeners('SIGINT');
  process.removeAllListeners('SIGTERM');
  process.once('SIGINT', shutdown);
  process.once('SIGTERM', shutdown);
}

function startLocalAgent(): ChildProcess {
  const devices = process.env.LOCAL_NODE_DEVICES ?? '2';
  const child = spawn(process.execPath, [join(__dirname, 'node-agent', 'main.js'), '--name', 'local-cpu', '--hardware', 'CPU', '--devices', devices], {
    stdio: 'inherit', env: process.env,
  });
  child.on('exit', (code, signal) => {
    if (signal !== 'SIGTERM') console.error(`local node agent exited (${signal ?? code}); jobs wait for another node`);
  });
  console.log(`Local CPU node agent "local-cpu" started with ${devices} slots`);
  return child;
}

main().catch((err) => {
  console.error(err instanceof Error ? err.message : err);
  process.exit(1);
});
