#!/usr/bin/env node
/**
 * Builds @nimbus/sdk (`npm run sdk:build`):
 *   dist/cjs   CommonJS (swc) + .d.ts; dist/cjs/cli.js is the `nimbus` bin
 *   dist/esm   ES modules (swc) + .d.ts, relative specifiers given the .js / /index.js extensions
 *              Node's ESM resolution needs, and a package.json with "type": "module"
 *   dist/examples  the examples as CommonJS (`node sdk/dist/examples/predict-sentiment.js`)
 * The declarations come from one `tsc --emitDeclarationOnly` run over src and examples, which is
 * also the type check (a type error fails the build).
 */
const { spawn } = require('node:child_process');
const { chmodSync, cpSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } = require('node:fs');
const path = require('node:path');
const swc = require('@swc/core');

const SDK = path.join(__dirname, '..');
const SRC = path.join(SDK, 'src');
const DIST = path.join(SDK, 'dist');
const TSC = require.resolve('typescript/bin/tsc');

function* files(dir) {
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const full = path.join(dir, entry.name);
    if (entry.isDirectory()) yield* files(full);
    else yield full;
  }
}

function tsc(...args) {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [TSC, ...args], { cwd: SDK, stdio: 'inherit' });
    child.on('error', reject);
    child.on('exit', (code) => (code === 0 ? resolve() : reject(new Error(`tsc ${args.join(' ')} failed`))));
  });
}

const swcOptions = (format) => ({
  sourceMaps: true,
  inlineSourcesContent: true,
  jsc: { target: 'es2022', parser: { syntax: 'typescript' }, keepClassNames: true },
  module: format === 'cjs' ? { type: 'commonjs' } : { type: 'es6' },
});

async function compile(format, from = SRC, out = path.join(DIST, format)) {
  await Promise.all([...files(from)].filter((f) => f.endsWith('.ts') && !f.endsWith('.d.ts')).map(async (file) => {
    const rel = path.relative(from, file).replace(/\.ts$/, '.js');
    const target = path.join(out, rel);
    const { code, map } = await swc.transformFile(file, { ...swcOptions(format), filename: file, outputPath: target, sourceFileName: path.relative(path.dirname(target), file) });
    mkdirSync(path.dirname(target), { recursive: true });
    writeFileSync(target, `${code}\n//# sourceMappingURL=${path.basename(target)}.map\n`);
    if (map) writeFileSync(`${target}.map`, map);
  }));
  if (from === SRC) writeFileSync(path.join(out, 'package.json'), `{ "type": "${format === 'cjs' ? 'commonjs' : 'module'}" }\n`);
}

/** './x' → './x.js' or './x/index.js' (whichever exists next to the importing file). */
function fixSpecifiers(file) {
  const dir = path.dirname(file);
  const text = readFileSync(file, 'utf8');
  const fixed = text.replace(/(\bfrom\s*|\bimport\s*\(\s*|\bimport\s+)(['"])(\.{1,2}\/[^'"]*)\2/g, (whole, lead, quote, spec) => {
    if (/\.(c|m)?js$/.test(spec) || spec.endsWith('.json')) return whole;
    const target = path.join(dir, spec);
    if (existsSync(`${target}.js`) || existsSync(`${target}.d.ts`)) return `${lead}${quote}${spec}.js${quote}`;
    if (existsSync(path.join(target, 'index.js')) || existsSync(path.join(target, 'index.d.ts'))) return `${lead}${quote}${spec}/index.js${quote}`;
    throw new Error(`${path.relative(SDK, file)}: cannot resolve ${spec}`);
  });
  if (fixed !== text) writeFileSync(file, fixed);
}

async function main() {
  const started = Date.now();
  rmSync(DIST, { recursive: true, force: true });
  const types = path.join(DIST, '.types');
  await Promise.all([
    tsc('-p', 'tsconfig.json', '--noEmit', 'false', '--emitDeclarationOnly', '--outDir', types),
    compile('cjs'),
    compile('esm'),
    // The examples, runnable as `node sdk/dist/examples/<name>.js` (they import '@nimbus/sdk': dist/cjs).
    compile('cjs', path.join(SDK, 'examples'), path.join(DIST, 'examples')),
  ]);
  for (const format of ['cjs', 'esm']) cpSync(path.join(types, 'src'), path.join(DIST, format), { recursive: true });
  rmSync(types, { recursive: true, force: true });
  for (const file of files(path.join(DIST, 'esm'))) {
    if (file.endsWith('.js') || file.endsWith('.d.ts')) fixSpecifiers(file);
  }
  for (const format of ['cjs', 'esm']) {
    const cli = path.join(DIST, format, 'cli.js');
    if (!readFileSync(cli, 'utf8').startsWith('#!/usr/bin/env node')) throw new Error(`dist/${format}/cli.js lost its shebang`);
    chmodSync(cli, 0o755);
  }
  const size = [...files(DIST)].reduce((n, f) => n + statSync(f).size, 0);
  console.log(`built sdk/dist (cjs, esm, types; ${(size / 1024).toFixed(0)} KiB) in ${((Date.now() - started) / 1000).toFixed(1)} s`);
}

main().catch((err) => {
  console.error(err.message);
  process.exitCode = 1;
});
