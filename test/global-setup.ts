import 'reflect-metadata';
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { prepareDatabase } from '../src/platform/db/prepare';
import { testEnv } from './support/env';

/**
 * Runs once before the suite: compiles dist/ (node agents and worker threads run as real processes
 * from compiled JS) and brings the test database to the latest migration.
 */
export default async function globalSetup(): Promise<void> {
  const root = join(__dirname, '..');
  execFileSync(process.execPath, [join(root, 'node_modules/@swc/cli/bin/swc.js'),
    'src', 'workers', 'migrations', 'bench', '-d', 'dist', '--copy-files', '-q'],
  { cwd: root, stdio: 'inherit' });
  await prepareDatabase(testEnv());
}
