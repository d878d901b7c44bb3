import { createApp, type App } from './app';
import { ConfigError, loadEnv, type Env } from './config/env';
import { prepareDatabase } from './platform/db/prepare';
import { createLogger } from './platform/logger';
import { DEMO, seedDemo } from './modules/tenancy/seed';
import { startServer, type RunningServer } from './server';

/** Loads config or exits with a message naming every bad variable (never a stack trace). */
export function loadEnvOrExit(): Env {
  try {
    return loadEnv();
  } catch (err) {
    if (err instanceof ConfigError) {
      console.error(err.message);
      process.exit(1);
    }
    throw err;
  }
}

/** Migrates, wires the app, seeds the demo tenant (development), and serves the API. */
export async function startApi(env: Env = loadEnvOrExit()): Promise<{ app: App; server: RunningServer }> {
  const log = createLogger(env.LOG_LEVEL);
  await prepareDatabase(env, (msg) => log.info(msg));
  const app = await createApp(env, { log });
  if (env.SEED_DEMO && env.NODE_ENV !== 'production') {
    const { created } = await seedDemo(app.db, false);
    log.info({ demoUser: DEMO.email }, created ? 'demo tenant created' : 'demo tenant present');
    console.log(`Demo login: ${DEMO.email} / ${DEMO.password}\nDemo API key: ${DEMO.apiKey}`);
  }
  const server = await startServer(app);
  console.log(`Nimbus API ready at http://localhost:${server.port}/graphql`);
  const shutdown = async () => {
    await server.close();
    await app.close();
    process.exit(0);
  };
  process.once('SIGINT', shutdown);
  process.once('SIGTERM', shutdown);
  return { app, server };
}
