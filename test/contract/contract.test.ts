import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Kind, parse, validate, type OperationDefinitionNode, type GraphQLSchema } from 'graphql';
import { buildNimbusSchema } from '../../src/platform/graphql/schema';
import { renderSchema, SCHEMA_FILE } from '../../src/scripts/print-schema';

const CONTRACT = join(__dirname, 'operations.graphql');
const SHARED = join(__dirname, '..', '..', '..', 'shared', 'contract');

let schema: GraphQLSchema;
beforeAll(async () => {
  schema = await buildNimbusSchema();
});

/** Root fields an operation selects; the schema "claims" an operation when it has any of them. */
function rootFields(op: OperationDefinitionNode): string[] {
  return op.selectionSet.selections.flatMap((s) => (s.kind === Kind.FIELD ? [s.name.value] : []));
}

function rootType(op: OperationDefinitionNode) {
  return op.operation === 'query' ? schema.getQueryType() : op.operation === 'mutation' ? schema.getMutationType() : schema.getSubscriptionType();
}

describe('public contract', () => {
  it('the vendored contract is the product side\'s current one', () => {
    for (const file of ['operations.graphql', 'services.md']) {
      if (!existsSync(join(SHARED, file))) continue; // outside the workspace only the vendored copy exists
      expect(readFileSync(join(__dirname, file), 'utf8')).toBe(readFileSync(join(SHARED, file), 'utf8'));
    }
  });

  it('every operation the schema claims validates against it; the rest are listed as skipped', () => {
    const doc = parse(readFileSync(CONTRACT, 'utf8'));
    const ops = doc.definitions.filter((d): d is OperationDefinitionNode => d.kind === Kind.OPERATION_DEFINITION);
    expect(ops.length).toBeGreaterThan(20);
    const skipped: string[] = [];
    const failures: string[] = [];
    for (const op of ops) {
      const fields = rootType(op)?.getFields() ?? {};
      if (!rootFields(op).some((f) => f in fields)) {
        skipped.push(op.name!.value);
        continue;
      }
      const errors = validate(schema, { kind: Kind.DOCUMENT, definitions: [op] });
      for (const e of errors) failures.push(`${op.name!.value}: ${e.message}`);
    }
    if (skipped.length) console.log(`contract operations not implemented yet (skipped): ${skipped.join(', ')}`);
    expect(failures).toEqual([]);
    for (const name of ['SignUp', 'LogIn', 'Me', 'CreateApiKey', 'RevokeApiKey', 'ApiKeys']) expect(skipped).not.toContain(name);
    for (const name of ['CreateDataset', 'CompleteDatasetUpload', 'Dataset', 'CreateTrainingJob', 'TrainingJob', 'CancelTrainingJob',
      'TrainingJobUpdated', 'Models', 'CreateDeployment', 'UpdateDeployment']) expect(skipped).not.toContain(name);
  });

  it('schema/schema.graphql is current with the code', async () => {
    expect(readFileSync(SCHEMA_FILE, 'utf8')).toBe(await renderSchema());
  });
});
