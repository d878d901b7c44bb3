import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';

export { compiledSibling } from '../../../src/platform/paths';

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
