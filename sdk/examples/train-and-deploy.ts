/**
 * Custom model end to end: upload a CSV dataset, train with a small AutoML search (progress and
 * the best trial so far), deploy the model version, and predict with the deployment.
 * Needs the training and deployment operations on the server.
 *
 *   npm run sdk:build && node sdk/dist/examples/train-and-deploy.js path/to/data.csv target_column
 */
import { Nimbus } from '@nimbus/sdk';

async function main() {
  const [file, target] = process.argv.slice(2);
  if (!file || !target) throw new Error('usage: train-and-deploy.js <file.csv> <target column>');
  const nimbus = new Nimbus();

  const { dataset, version } = await nimbus.datasets.upload(file, { name: 'example' });
  console.log(`dataset ${dataset.id} v${version.version}: ${version.rowCount} rows, columns ${version.columns.map((c) => c.name).join(', ')}`);

  const job = await nimbus.trainings.create({
    datasetId: dataset.id, modelName: 'example', task: 'TABULAR_CLASSIFICATION', targetColumn: target, automl: { maxTrials: 4 },
  });
  const trained = await nimbus.wait(job, {
    onProgress: (j) => console.log(`${j.status} ${Math.round(j.progress * 100)}%  trials ${j.trials.filter((t) => t.status === 'SUCCEEDED').length}/${j.trials.length}`),
  });
  if (trained.status !== 'SUCCEEDED' || !trained.modelVersion) throw new Error(`training ${trained.status}: ${trained.error?.message ?? ''}`);
  console.log(`best of ${trained.trials.length} trials by ${trained.metric}: ${trained.bestTrial?.algorithm}`, trained.bestTrial?.metrics);

  const deployment = await nimbus.deployments.create({ name: 'example', modelVersionId: trained.modelVersion.id, hardware: 'CPU' });
  // One row with a typical value per feature (the mean, or the most frequent category).
  const columns = version.columns.filter((c) => c.name !== target);
  const row = Object.fromEntries(columns.map((c) => [c.name, c.mean ?? c.topValues?.[0]?.value ?? null]));
  const p = await nimbus.predict({ deployment: deployment.id, input: { rows: [row] } });
  console.log(`deployment ${deployment.id}:`, p.output?.predictions[0]);
}

main().catch((err) => {
  console.error(err);
  process.exitCode = 1;
});
