import 'reflect-metadata';
import { loadEnvOrExit } from '../bootstrap';
import { prepareDatabase } from '../platform/db/prepare';

prepareDatabase(loadEnvOrExit(), console.log).then(
  () => console.log('database is up to date'),
  (err) => {
    console.error(err);
    process.exit(1);
  },
);
