import type { ApolloServerPlugin } from '@apollo/server';
import { Counter, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

/** One Prometheus registry per process; domains add their own metrics to it. */
export class Metrics {
  readonly registry = new Registry();
  readonly graphqlRequests = new Counter({
    name: 'nimbus_graphql_requests_total', help: 'GraphQL requests by operation name and outcome',
    labelNames: ['operation', 'outcome'] as const, registers: [this.registry],
  });
  readonly graphqlDuration = new Histogram({
    name: 'nimbus_graphql_request_duration_seconds', help: 'GraphQL request latency by operation name',
    labelNames: ['operation'] as const, buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10, 30],
    registers: [this.registry],
  });

  constructor(defaults = true) {
    if (defaults) collectDefaultMetrics({ register: this.registry });
  }

  apolloPlugin(): ApolloServerPlugin {
    const m = this;
    return {
      async requestDidStart() {
        const start = process.hrtime.bigint();
        return {
          async willSendResponse({ operationName, response }) {
            const op = operationName ?? 'anonymous';
            const failed = response.body.kind === 'single' && (response.body.singleResult.errors?.length ?? 0) > 0;
            m.graphqlRequests.inc({ operation: op, outcome: failed ? 'error' : 'ok' });
            m.graphqlDuration.observe({ operation: op }, Number(process.hrtime.bigint() - start) / 1e9);
          },
        };
      },
    };
  }
}
