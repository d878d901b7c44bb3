import 'reflect-metadata';
import { startApi } from './bootstrap';

/** `npm run api`: the GraphQL API alone. */
startApi().catch((err) => {
  console.error(err instanceof Error ? err.message : err);
  process.exit(1);
});
