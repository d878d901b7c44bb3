/**
 * A long job with live progress: `system.echo` sleeps and reports progress in steps. Progress
 * arrives over the `predictionUpdated` subscription (WebSocket; the `ws` package on Node 20),
 * or by polling when no WebSocket is available. Ctrl-C stops waiting and cancels the job.
 *
 *   npm run sdk:build && node sdk/dist/examples/wait-with-progress.js
 */
import { Nimbus, WaitTimeoutError } from '@nimbus/sdk';

async function main() {
  const nimbus = new Nimbus();
  const controller = new AbortController();
  process.once('SIGINT', () => controller.abort());
  try {
    const prediction = await nimbus.predict({
      service: 'system.echo',
      input: { message: 'done!', sleepMs: 4000, progressSteps: 8 },
      wait: 120, // seconds; past the 60 s the server holds a request, the SDK keeps waiting
      signal: controller.signal,
      cancelOnAbort: true,
      onProgress: (p) => {
        const width = 30;
        const full = Math.round(p.progress * width);
        process.stdout.write(`\r${p.status.padEnd(9)} [${'#'.repeat(full)}${'.'.repeat(width - full)}] ${Math.round(p.progress * 100)}%`);
      },
    });
    process.stdout.write('\n');
    console.log(`${prediction.id}: ${prediction.status}`, prediction.output);
  } catch (err) {
    process.stdout.write('\n');
    if ((err as Error).name === 'AbortError') console.log('Interrupted: the prediction was canceled.');
    else if (err instanceof WaitTimeoutError) console.log('Still running; check it later with nimbus.predictions.get(id).');
    else throw err;
  } finally {
    await nimbus.close();
  }
}

main().catch((err) => {
  console.error(err);
  process.exitCode = 1;
});
