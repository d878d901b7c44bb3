/**
 * The SDK's documents against the schema and the contract: generated types current, every contract
 * operation generated (with at least the contract's selection), every schema root field covered.
 */
import { execFileSync } from 'node:child_process';
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { buildSchema, Kind, parse, validate, type FragmentDefinitionNode, type OperationDefinitionNode, type SelectionSetNode } from 'graphql';
import { SDK_VERSION } from '../../sdk/src';

const ROOT = join(__dirname, '..', '..');
const schema = buildSchema(readFileSync(join(ROOT, 'schema', 'schema.graphql'), 'utf8'));
const operations = (text: string) =>
  parse(text).definitions.filter((d): d is OperationDefinitionNode => d.kind === Kind.OPERATION_DEFINITION);
const sdkDocs = readdirSync(join(ROOT, 'sdk', 'src', 'operations')).filter((f) => f.endsWith('.graphql'))
  .map((f) => readFileSync(join(ROOT, 'sdk', 'src', 'operations', f), 'utf8'));
const sdkOps = operations(sdkDocs.join('\n'));
const contractOps = operations(readFileSync(join(ROOT, 'test', 'contract', 'operations.graphql'), 'utf8'));
const rootFields = (op: OperationDefinitionNode) => op.selectionSet.selections.flatMap((s) => (s.kind === Kind.FIELD ? [s.name.value] : []));

describe('SDK documents', () => {
  it('sdk/src/generated is current with schema/schema.graphql and the operations (npm run sdk:check)', () => {
    const out = execFileSync(process.execPath, [join(ROOT, 'sdk', 'scripts', 'generate.cjs'), '--check'], { cwd: ROOT, encoding: 'utf8' });
    expect(out).toMatch(/is current/);
  });

  it('covers every contract operation and every root field of the schema', () => {
    const sdkNames = new Set(sdkOps.map((o) => o.name!.value));
    expect(contractOps.map((o) => o.name!.value).filter((n) => !sdkNames.has(n))).toEqual([]);
    const used = new Set(sdkOps.flatMap((op) => rootFields(op).map((f) => `${op.operation}.${f}`)));
    const all = [['query', schema.getQueryType()], ['mutation', schema.getMutationType()], ['subscription', schema.getSubscriptionType()]] as const;
    const uncovered = all.flatMap(([kind, type]) => Object.keys(type?.getFields() ?? {}).map((f) => `${kind}.${f}`)).filter((f) => !used.has(f));
    expect(uncovered).toEqual([]);
  });

  it('validates every generated operation and selects at least the contract\'s fields', () => {
    const fragments = parse(sdkDocs.join('\n')).definitions.filter((d): d is FragmentDefinitionNode => d.kind === Kind.FRAGMENT_DEFINITION);
    const byName = new Map(fragments.map((f) => [f.name.value, f]));
    const paths = (set: SelectionSetNode, prefix = ''): string[] => set.selections.flatMap((s) => {
      if (s.kind === Kind.FIELD) return [`${prefix}${s.name.value}`, ...(s.selectionSet ? paths(s.selectionSet, `${prefix}${s.name.value}.`) : [])];
      if (s.kind === Kind.FRAGMENT_SPREAD) return paths(byName.get(s.name.value)!.selectionSet, prefix);
      return paths(s.selectionSet, prefix);
    });
    expect(validate(schema, parse(sdkDocs.join('\n')))).toEqual([]);
    for (const op of sdkOps) {
      const contract = contractOps.find((c) => c.name!.value === op.name!.value);
      if (!contract) continue;
      const have = new Set(paths(op.selectionSet));
      expect({ op: op.name!.value, missing: paths(contract.selectionSet).filter((p) => !have.has(p)) }).toEqual({ op: op.name!.value, missing: [] });
    }
  });

  it('keeps SDK_VERSION equal to sdk/package.json', () => {
    expect(JSON.parse(readFileSync(join(ROOT, 'sdk', 'package.json'), 'utf8')).version).toBe(SDK_VERSION);
  });
});
