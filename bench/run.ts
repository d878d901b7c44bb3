import 'reflect-metadata';
import { printTable, writeResult, type Bench } from './harness';

/** `npm run bench -- <name> [args]`: runs bench/<name>.ts, prints a table, writes bench/results/<name>.json. */
// Loaded lazily (require, since the project compiles to CommonJS) so one bench does not load another's models.
const load = (path: string) => Promise.resolve(require(path) as { default: Bench });
const BENCHES: Record<string, () => Promise<{ default: Bench }>> = {
  gateway: () => load('./gateway'),
  dispatch: () => load('./dispatch'),
  scheduler: () => load('./scheduler'),
  services: () => load('./services'),
  metering: () => load('./metering'),
  training: () => load('./training'),
  'billing-reads': () => load('./billing-reads'),
};

async function main() {
  const [name, ...args] = process.argv.slice(2);
  const names = name && name !== 'all' ? [name] : Object.keys(BENCHES);
  for (const n of names) {
    const load = BENCHES[n];
    if (!load) {
      console.error(`unknown benchmark "${n}"; known: ${Object.keys(BENCHES).join(', ')}`);
      process.exit(2);
    }
    const bench = (await load()).default;
    console.log(`\n== ${n} ==`);
    const result = await bench(args);
    printTable(result.rows);
    console.log(JSON.stringify(result.summary, null, 2));
    console.log(`written ${writeResult(result)}`);
  }
  process.exit(0);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
