import { existsSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';

/** The repository root, found from any file in src/ or dist/ (the nearest folder with package.json). */
export function repoRoot(from = __dirname): string {
  let dir = from;
  while (!existsSync(join(dir, 'package.json'))) {
    const up = dirname(dir);
    if (up === dir) throw new Error(`no package.json above ${from}`);
    dir = up;
  }
  return dir;
}

/**
 * Compiled JS file for a worker-thread entry that sits next to `sourceFile` (pass __filename).
 * Compiled code (.js) uses its sibling; under jest (.ts source) maps <root>/x/y.ts to
 * <root>/dist/x/y.js, which jest's globalSetup builds.
 */
export function compiledSibling(sourceFile: string, baseName: string): string {
  const dir = dirname(sourceFile);
  if (sourceFile.endsWith('.js')) return join(dir, `${baseName}.js`);
  const root = repoRoot(dir);
  return join(root, 'dist', relative(root, dir), `${baseName}.js`);
}
