import { Arg, Args, Ctx, ID, Mutation, Query, Resolver, Root, Subscription } from 'type-graphql';
import type { GqlContext } from '../../platform/graphql/context';
import { PageArgsType, connectionComplexity } from '../../platform/graphql/connection';
import type { JobView } from './jobs.service';
import {
  NodeType, PredictInput, Prediction, PredictionConnection, QuotaType, ResendWebhookPayload, Service, SetQuotaInput, WebhookDeliveriesArgs,
  WebhookDeliveryConnection,
} from './compute.types';

const toPrediction = (j: JobView): Prediction => ({ ...j, node: j.nodeId ? { id: j.nodeId } : null });

@Resolver()
export class ComputeResolver {
  @Query(() => [Service], { description: 'The pre-tuned AI services and their prices' })
  services(@Ctx() ctx: GqlContext) {
    return ctx.services.services.list();
  }

  @Mutation(() => Prediction, { description: 'Runs a service or a deployment as a job; waits up to `wait` seconds for the result' })
  async predict(@Arg('input', () => PredictInput) input: PredictInput, @Ctx() ctx: GqlContext) {
    return toPrediction(await ctx.services.jobs.predict(ctx, { ...input }));
  }

  @Query(() => Prediction)
  async prediction(@Arg('id', () => ID) id: string, @Ctx() ctx: GqlContext) {
    return toPrediction(await ctx.services.jobs.prediction(ctx, id));
  }

  @Query(() => PredictionConnection, { complexity: connectionComplexity })
  async predictions(@Args(() => PageArgsType) args: PageArgsType, @Ctx() ctx: GqlContext) {
    const page = await ctx.services.jobs.predictions(ctx, args);
    return { ...page, edges: page.edges.map((e) => ({ ...e, node: toPrediction(e.node) })) };
  }

  @Mutation(() => Prediction)
  async cancelPrediction(@Arg('id', () => ID) id: string, @Ctx() ctx: GqlContext) {
    return toPrediction(await ctx.services.jobs.cancelPrediction(ctx, id));
  }

  @Subscription(() => Prediction, {
    description: 'The prediction now, then on every change until it ends',
    subscribe: ({ args, context }) => {
      const ctx = context as GqlContext;
      return ctx.services.jobs.updates(ctx, args.id as string, 'PREDICTION', ctx.signal);
    },
  })
  predictionUpdated(@Arg('id', () => ID) _id: string, @Root() job: JobView): Prediction {
    return toPrediction(job);
  }

  @Query(() => WebhookDeliveryConnection, {
    complexity: connectionComplexity, description: 'Every attempt to deliver the tenant\'s webhooks, newest first (optionally one job\'s)',
  })
  webhookDeliveries(@Args(() => WebhookDeliveriesArgs) args: WebhookDeliveriesArgs, @Ctx() ctx: GqlContext) {
    return ctx.services.webhookDeliveries.list(ctx, { ...args });
  }

  @Mutation(() => ResendWebhookPayload, {
    description: 'Sends a job\'s terminal webhook again (same webhook-id), e.g. once a receiver that missed it is fixed (ADMIN scope)',
  })
  resendWebhook(@Arg('jobId', () => ID) jobId: string, @Ctx() ctx: GqlContext) {
    return ctx.services.webhookDeliveries.resend(ctx, jobId);
  }

  @Query(() => [NodeType], { description: 'Operators only' })
  nodes(@Ctx() ctx: GqlContext) {
    return ctx.services.operator.nodes(ctx);
  }

  @Query(() => [QuotaType], { description: 'Operators only' })
  quotas(@Ctx() ctx: GqlContext) {
    return ctx.services.operator.quotas(ctx);
  }

  @Mutation(() => QuotaType, { description: 'Operators only' })
  setQuota(@Arg('input', () => SetQuotaInput) input: SetQuotaInput, @Ctx() ctx: GqlContext) {
    return ctx.services.operator.setQuota(ctx, { ...input });
  }
}
