import 'reflect-metadata';
import { createApp } from '../app';
import { loadEnvOrExit } from '../bootstrap';
import { prepareDatabase } from '../platform/db/prepare';
import { DEMO, seedDemo } from '../modules/tenancy/seed';

/** `npm run seed`: the demo tenant, owner and API key (development only). */
async function main() {
  const env = loadEnvOrExit();
  await prepareDatabase(env);
  const app = await createApp(env);
  try {
    const { created } = await seedDemo(app.db, env.NODE_ENV === 'production');
    console.log(`${created ? 'created' : 'already present'}: ${DEMO.email} / ${DEMO.password}, API key ${DEMO.apiKey}`);
  } finally {
    await app.close();
  }
}
main().catch((err) => {
  console.error(err instanceof Error ? err.message : err);
  process.exit(1);
});
