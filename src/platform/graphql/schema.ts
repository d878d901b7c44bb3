import { DateTimeResolver } from 'graphql-scalars';
import type { GraphQLSchema } from 'graphql';
import { buildSchema, type NonEmptyArray, type PubSub } from 'type-graphql';
import { TenancyResolver } from '../../modules/tenancy/tenancy.resolver';

// eslint-disable-next-line @typescript-eslint/no-unsafe-function-type
export const RESOLVERS: NonEmptyArray<Function> = [TenancyResolver];

/** The schema is built from the resolvers alone, so `npm run schema` needs no database. */
export function buildNimbusSchema(pubSub?: PubSub): Promise<GraphQLSchema> {
  return buildSchema({
    resolvers: RESOLVERS, validate: false, pubSub, emitSchemaFile: false,
    // The contract names its date scalar DateTime (graphql-scalars' RFC 3339 DateTime).
    scalarsMap: [{ type: Date, scalar: DateTimeResolver }],
  });
}
