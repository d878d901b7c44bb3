import { Arg, Args, Ctx, FieldResolver, ID, Mutation, Query, Resolver, Root, Subscription } from 'type-graphql';
import type { GqlContext } from '../../platform/graphql/context';
import { PageArgsType, connectionComplexity } from '../../platform/graphql/connection';
import { notFound } from '../../platform/errors';
import type { TrainingJobView } from './training.service';
import {
  CreateDatasetInput, CreateDatasetPayload, CreateDeploymentInput, CreateTrainingJobInput, Dataset, DatasetConnection, DatasetVersion,
  Deployment, DeploymentConnection, Model, ModelConnection, ModelRef, ModelVersion, TrainingJob, Trial, UploadTarget,
} from './training.types';

/** Datasets, training jobs, the model registry and deployments (operations.graphql "datasets, training, models, deployments"). */
@Resolver()
export class TrainingResolver {
  @Mutation(() => CreateDatasetPayload, { description: 'A dataset and a signed URL to PUT its first file to' })
  createDataset(@Arg('input', () => CreateDatasetInput) input: CreateDatasetInput, @Ctx() ctx: GqlContext) {
    return ctx.services.datasets.createDataset(ctx, { ...input });
  }

  @Mutation(() => UploadTarget, { description: 'A signed URL to PUT another file (a new version) of a dataset to' })
  createDatasetUpload(@Arg('datasetId', () => ID) datasetId: string, @Ctx() ctx: GqlContext) {
    return ctx.services.datasets.createDatasetUpload(ctx, datasetId);
  }

  @Mutation(() => DatasetVersion, { description: 'Validates and profiles the uploaded file into an immutable version' })
  completeDatasetUpload(@Arg('uploadId', () => ID) uploadId: string, @Ctx() ctx: GqlContext) {
    return ctx.services.datasets.completeDatasetUpload(ctx, uploadId);
  }

  @Query(() => Dataset)
  dataset(@Arg('id', () => ID) id: string, @Ctx() ctx: GqlContext) {
    return ctx.services.datasets.dataset(ctx, id);
  }

  @Query(() => DatasetConnection, { complexity: connectionComplexity })
  datasets(@Args(() => PageArgsType) args: PageArgsType, @Ctx() ctx: GqlContext) {
    return ctx.services.datasets.datasets(ctx, args);
  }

  @Mutation(() => TrainingJob, { description: 'Trains on the node pool: AutoML trials (or one algorithm), then a model version' })
  createTrainingJob(@Arg('input', () => CreateTrainingJobInput) input: CreateTrainingJobInput, @Ctx() ctx: GqlContext) {
    return ctx.services.training.createTrainingJob(ctx, { ...input });
  }

  @Query(() => TrainingJob)
  trainingJob(@Arg('id', () => ID) id: string, @Ctx() ctx: GqlContext) {
    return ctx.services.training.trainingJob(ctx, id);
  }

  @Mutation(() => TrainingJob, { description: 'Cancels the training job and its trials that have not ended' })
  cancelTrainingJob(@Arg('id', () => ID) id: string, @Ctx() ctx: GqlContext) {
    return ctx.services.training.cancelTrainingJob(ctx, id);
  }

  @Subscription(() => TrainingJob, {
    description: 'The training job now, then on every change until it ends',
    subscribe: ({ args, context }) => {
      const ctx = context as GqlContext;
      return ctx.services.training.updates(ctx, args.id as string, ctx.signal);
    },
  })
  trainingJobUpdated(@Arg('id', () => ID) _id: string, @Root() job: TrainingJobView): TrainingJobView {
    return job;
  }

  @Query(() => ModelConnection, { complexity: connectionComplexity })
  models(@Args(() => PageArgsType) args: PageArgsType, @Ctx() ctx: GqlContext) {
    return ctx.services.models.models(ctx, args);
  }

  @Query(() => Model)
  model(@Arg('id', () => ID) id: string, @Ctx() ctx: GqlContext) {
    return ctx.services.models.model(ctx, id);
  }

  @Query(() => ModelVersion)
  modelVersion(@Arg('id', () => ID) id: string, @Ctx() ctx: GqlContext) {
    return ctx.services.models.modelVersion(ctx, id);
  }

  @Mutation(() => Deployment, { description: 'Binds a name to a model version; predict with predict(input: { deployment: id })' })
  createDeployment(@Arg('input', () => CreateDeploymentInput) input: CreateDeploymentInput, @Ctx() ctx: GqlContext) {
    return ctx.services.models.createDeployment(ctx, { ...input });
  }

  @Mutation(() => Deployment, { description: 'Points the deployment at another version of its model; in-flight predictions finish on the old one' })
  updateDeployment(@Arg('id', () => ID) id: string, @Arg('modelVersionId', () => ID) modelVersionId: string, @Ctx() ctx: GqlContext) {
    return ctx.services.models.updateDeployment(ctx, id, modelVersionId);
  }

  @Query(() => Deployment)
  deployment(@Arg('id', () => ID) id: string, @Ctx() ctx: GqlContext) {
    return ctx.services.models.deployment(ctx, id);
  }

  @Query(() => DeploymentConnection, { complexity: connectionComplexity })
  deployments(@Args(() => PageArgsType) args: PageArgsType, @Ctx() ctx: GqlContext) {
    return ctx.services.models.deployments(ctx, args);
  }
}

@Resolver(() => TrainingJob)
export class TrainingJobFields {
  @FieldResolver(() => [Trial], { description: 'The leaderboard: every trial with its held-out metrics' })
  trials(@Root() job: TrainingJobView, @Ctx() ctx: GqlContext) {
    return ctx.services.training.trials(ctx, job.id);
  }

  @FieldResolver(() => Trial, { nullable: true })
  async bestTrial(@Root() job: TrainingJobView, @Ctx() ctx: GqlContext) {
    if (!job.bestTrialId) return null;
    return (await ctx.services.training.trials(ctx, job.id)).find((t) => t.id === job.bestTrialId) ?? null;
  }

  @FieldResolver(() => ModelVersion, { nullable: true })
  modelVersion(@Root() job: TrainingJobView, @Ctx() ctx: GqlContext) {
    return job.modelVersionId ? ctx.services.models.versionOfTrainingJob(ctx, job.id) : null;
  }
}

@Resolver(() => ModelVersion)
export class ModelVersionFields {
  @FieldResolver(() => DatasetVersion, { nullable: true, description: 'Lineage: the data it was trained on' })
  async datasetVersion(@Root() v: ModelVersion, @Ctx() ctx: GqlContext) {
    if (!v.datasetVersionId) return null;
    return ctx.services.datasets.version(ctx.principal!.tenantId, v.datasetVersionId).catch(() => null);
  }

  @FieldResolver(() => TrainingJob, { nullable: true, description: 'Lineage: the training job that produced it' })
  async trainingJob(@Root() v: ModelVersion, @Ctx() ctx: GqlContext) {
    if (!v.trainingJobId) return null;
    return ctx.services.training.trainingJob(ctx, v.trainingJobId).catch((err) => {
      if ((err as { code?: string }).code === notFound('x').code) return null;
      throw err;
    });
  }

  @FieldResolver(() => ModelRef)
  model(@Root() v: ModelVersion) {
    return { id: v.modelId, name: v.modelName };
  }
}

@Resolver(() => Deployment)
export class DeploymentFields {
  @FieldResolver(() => ModelVersion)
  modelVersion(@Root() d: Deployment, @Ctx() ctx: GqlContext) {
    return ctx.services.models.modelVersion(ctx, d.modelVersionId);
  }
}
