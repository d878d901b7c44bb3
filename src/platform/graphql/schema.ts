import { DateTimeResolver } from 'graphql-scalars';
import type { GraphQLSchema } from 'graphql';
import { buildSchema, type NonEmptyArray, type PubSub } from 'type-graphql';
import { TenancyResolver } from '../../modules/tenancy/tenancy.resolver';
import { ComputeResolver } from '../../modules/compute/compute.resolver';
import { BillingResolver } from '../../modules/billing/billing.resolver';
import { DeploymentFields, ModelVersionFields, TrainingJobFields, TrainingResolver } from '../../modules/training/training.resolver';

// eslint-disable-next-line @typescript-eslint/no-unsafe-function-type
export const RESOLVERS: NonEmptyArray<Function> = [
  TenancyResolver, ComputeResolver, BillingResolver, TrainingResolver, TrainingJobFields, ModelVersionFields, DeploymentFields,
];

/** The schema is built from the resolvers alone, so `npm run schema` needs no database. */
export function buildNimbusSchema(): Promise<GraphQLSchema> {
  return buildSchema({
    resolvers: RESOLVERS, validate: false, pubSub: NO_TOPICS, emitSchemaFile: false,
    // The contract names its date scalar DateTime (graphql-scalars' RFC 3339 DateTime).
    scalarsMap: [{ type: Date, scalar: DateTimeResolver }],
  });
}

/**
 * Every subscription supplies its own `subscribe` (job updates come from Redis through
 * JobUpdateBus), so type-graphql's topic pub/sub is never used; it only has to exist.
 */
const NO_TOPICS: PubSub = {
  publish() {
    throw new Error('topic pub/sub is not used; subscriptions define `subscribe`');
  },
  subscribe() {
    throw new Error('topic pub/sub is not used; subscriptions define `subscribe`');
  },
};
