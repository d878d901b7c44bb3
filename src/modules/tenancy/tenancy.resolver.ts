import { Arg, Args, Ctx, ID, Mutation, Query, Resolver } from 'type-graphql';
import type { GqlContext } from '../../platform/graphql/context';
import { PageArgsType, connectionComplexity } from '../../platform/graphql/connection';
import {
  ApiKeyConnection, ApiKeyType, AuthPayload, CreateApiKeyInput, CreateApiKeyPayload, Me, SignUpInput, UpdateWebhookSettingsInput, WebhookSettingsType,
} from './tenancy.types';

@Resolver()
export class TenancyResolver {
  @Mutation(() => AuthPayload, { description: 'Creates a user and a tenant the user owns; returns a JWT for that tenant.' })
  signUp(@Arg('input', () => SignUpInput) input: SignUpInput, @Ctx() ctx: GqlContext) {
    return ctx.services.tenancy.signUp({ ...input });
  }

  @Mutation(() => AuthPayload)
  logIn(@Arg('email') email: string, @Arg('password') password: string, @Ctx() ctx: GqlContext) {
    return ctx.services.tenancy.logIn(email, password);
  }

  @Query(() => Me)
  me(@Ctx() ctx: GqlContext) {
    return ctx.services.tenancy.me(ctx);
  }

  @Mutation(() => CreateApiKeyPayload)
  createApiKey(@Arg('input', () => CreateApiKeyInput) input: CreateApiKeyInput, @Ctx() ctx: GqlContext) {
    return ctx.services.tenancy.createApiKey(ctx, { ...input });
  }

  @Mutation(() => ApiKeyType)
  revokeApiKey(@Arg('id', () => ID) id: string, @Ctx() ctx: GqlContext) {
    return ctx.services.tenancy.revokeApiKey(ctx, id);
  }

  @Query(() => ApiKeyConnection, { complexity: connectionComplexity })
  apiKeys(@Args(() => PageArgsType) args: PageArgsType, @Ctx() ctx: GqlContext) {
    return ctx.services.tenancy.apiKeys(ctx, args);
  }

  @Query(() => WebhookSettingsType, { description: "The tenant's webhook URL and signing secret (ADMIN scope)" })
  webhookSettings(@Ctx() ctx: GqlContext) {
    return ctx.services.webhookSettings.get(ctx);
  }

  @Mutation(() => WebhookSettingsType, { description: 'Sets (or, with null, removes) the URL for account events (ADMIN scope)' })
  updateWebhookSettings(@Arg('input', () => UpdateWebhookSettingsInput) input: UpdateWebhookSettingsInput, @Ctx() ctx: GqlContext) {
    return ctx.services.webhookSettings.update(ctx, { ...input });
  }

  @Mutation(() => WebhookSettingsType, {
    description: 'A new signing secret; the old one keeps signing beside it for 24 hours, so receivers can switch (ADMIN scope)',
  })
  rotateWebhookSecret(@Ctx() ctx: GqlContext) {
    return ctx.services.webhookSettings.rotateSecret(ctx);
  }
}
