import type { ApolloServerPlugin } from '@apollo/server';
import { GraphQLError, type DocumentNode, type GraphQLSchema } from 'graphql';
import { fieldExtensionsEstimator, getComplexity, simpleEstimator } from 'graphql-query-complexity';
import { ErrorCode } from '../errors';
import type { GqlContext } from './context';

/**
 * Query cost (Shopify/GitHub style): each field costs 1, connections cost `first` × their
 * selection. Over the limit the request is refused before execution with QUERY_TOO_COSTLY;
 * every response carries `extensions.cost { requested, limit }`.
 */
export function costPlugin(schema: () => GraphQLSchema, limit: number): ApolloServerPlugin<GqlContext> {
  return {
    async requestDidStart() {
      return {
        async didResolveOperation({ request, document, contextValue }) {
          contextValue.cost = queryCost(schema(), document, request.operationName ?? undefined, request.variables ?? {}, limit);
          assertWithinCost(contextValue.cost);
        },
        async willSendResponse({ response, contextValue }) {
          if (response.body.kind !== 'single') return;
          const r = response.body.singleResult;
          r.extensions = { ...r.extensions, cost: contextValue.cost ?? { requested: 0, limit } };
        },
      };
    },
  };
}

/** The cost of an operation against `limit` (BAD_USER_INPUT for a bad variable). */
export function queryCost(
  schema: GraphQLSchema, document: DocumentNode, operationName: string | undefined, variables: Record<string, unknown>, limit: number,
): { requested: number; limit: number } {
  try {
    const requested = getComplexity({
      schema, query: document, operationName, variables,
      estimators: [fieldExtensionsEstimator(), simpleEstimator({ defaultComplexity: 1 })],
    });
    return { requested, limit };
  } catch (err) {
    // The cost walk coerces variables first; a bad variable is the client's error.
    throw new GraphQLError((err as Error).message, { extensions: { code: ErrorCode.BAD_USER_INPUT, http: { status: 400 } } });
  }
}

/** QUERY_TOO_COSTLY over the limit. */
export function assertWithinCost({ requested, limit }: { requested: number; limit: number }): void {
  if (requested > limit) {
    throw new GraphQLError(`Query cost ${requested} exceeds the limit of ${limit}`, {
      extensions: { code: ErrorCode.QUERY_TOO_COSTLY, cost: { requested, limit } },
    });
  }
}
