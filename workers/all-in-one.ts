import 'reflect-metadata';
import { loadEnvOrExit, startApi } from '../src/bootstrap';

/**
 * `npm start`: the whole system on one machine — API (with migrations and the demo seed). The
 * control plane and a local CPU node agent join here as the execution plane lands.
 */
async function main() {
  const env = loadEnvOrExit();
  await startApi(env);
}

main().catch((err) => {
  console.error(err instanceof Error ? err.message : err);
  process.exit(1);
});
