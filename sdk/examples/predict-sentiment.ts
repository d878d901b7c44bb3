/**
 * Sentiment of a sentence with the pre-tuned `language.sentiment` service.
 *
 *   npm start                                   # in another terminal: prints the demo API key
 *   export NIMBUS_API_KEY=nmb_demo0demo0de_DEMOKEYdoNotUseInProductionXXXXXXXXXXXXXXXX
 *   npm run sdk:build && node sdk/dist/examples/predict-sentiment.js "I love this product"
 */
import { Nimbus } from '@nimbus/sdk';

async function main() {
  const nimbus = new Nimbus(); // NIMBUS_API_KEY, NIMBUS_BASE_URL (default http://localhost:4000)
  const text = process.argv[2] ?? 'Nimbus made this so easy. I love it!';
  const prediction = await nimbus.predict({ service: 'language.sentiment', input: { text } });
  if (prediction.status !== 'SUCCEEDED' || !prediction.output) {
    throw new Error(`prediction ${prediction.id} ended ${prediction.status}: ${prediction.error?.message ?? ''}`);
  }
  // output is typed: { score, label, sentences }
  const { label, score, sentences } = prediction.output;
  console.log(`${label} (${score.toFixed(2)})`);
  for (const s of sentences) console.log(`  ${s.label.padEnd(8)} ${s.score.toFixed(2)}  ${s.text}`);
  console.log(`billed ${prediction.usage.seconds.toFixed(3)} ${prediction.usage.hardware} seconds`);
}

main().catch((err) => {
  console.error(err);
  process.exitCode = 1;
});
