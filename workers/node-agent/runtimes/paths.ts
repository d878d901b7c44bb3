import { existsSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';

/** The repository root: the folder holding package.json above `from`, skipping dist/. */
export function projectRoot(from: string = __dirname): string {
  let dir = from;
  for (;;) {
    if (existsSync(join(dir, 'package.json')) && existsSync(join(dir, 'node_modules'))) return dir;
    const parent = dirname(dir);
    if (parent === dir) throw new Error(`no project root above ${from}`);
    dir = parent;
  }
}

/**
 * Compiled JS file for a worker-thread entry that sits next to `sourceFile` (pass __filename).
 * Compiled code (.js) uses its sibling; under jest (.ts source) maps <root>/x/y.ts to
 * <root>/dist/x/y.js, which jest's globalSetup builds.
 */
export function compiledSibling(sourceFile: string, baseName: string): string {
  const dir = dirname(sourceFile);
  if (sourceFile.endsWith('.js')) return join(dir, `${baseName}.js`);
  const root = projectRoot(dir);
  return join(root, 'dist', relative(root, dir), `${baseName}.js`);
}

/** A file inside an installed package (model files and wasm are read directly, not required). */
export function modulePath(pkg: string, ...segments: string[]): string {
  let dir = __dirname;
  for (;;) {
    const candidate = join(dir, 'node_modules', pkg);
    if (existsSync(candidate)) return join(candidate, ...segments);
    const parent = dirname(dir);
    if (parent === dir) throw new Error(`package ${pkg} is not installed`);
    dir = parent;
  }
}
