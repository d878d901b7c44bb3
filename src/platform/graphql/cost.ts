import type { ApolloServerPlugin } from '@apollo/server';
import { GraphQLError, type GraphQLSchema } from 'graphql';
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
          let requested: number;
          try {
            requested = getComplexity({
              schema: schema(), query: document, operationName: request.operationName ?? undefined,
              variables: request.variables ?? {},
              estimators: [fieldExtensionsEstimator(), simpleEstimator({ defaultComplexity: 1 })],
            });
          } catch (err) {
            // The cost walk coerces variables first; a bad variable is the client's error.
            throw new GraphQLError((err as Error).message, { extensions: { code: ErrorCode.BAD_USER_INPUT, http: { status: 400 } } });
          }
          contextValue.cost = { requested, limit };
          if (requested > limit) {
            throw new GraphQLError(`Query cost ${requested} exceeds the limit of ${limit}`, {
              extensions: { code: ErrorCode.QUERY_TOO_COSTLY, cost: { requested, limit } },
            });
          }
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
