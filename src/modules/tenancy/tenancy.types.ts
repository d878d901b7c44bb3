import { Field, ID, InputType, ObjectType, registerEnumType } from 'type-graphql';
import { ConnectionType } from '../../platform/graphql/connection';
import { enumOf } from '../../platform/graphql/enums';
import { ROLES, SCOPES, TENANT_STATUSES } from './tenancy.entities';

export const RoleEnum = enumOf(ROLES);
export const ScopeEnum = enumOf(SCOPES);
export const TenantStatusEnum = enumOf(TENANT_STATUSES);
registerEnumType(RoleEnum, { name: 'Role' });
registerEnumType(ScopeEnum, { name: 'ApiKeyScope' });
registerEnumType(TenantStatusEnum, { name: 'TenantStatus' });

@ObjectType('User')
export class UserType {
  @Field(() => ID) id: string;
  @Field() email: string;
}

@ObjectType('Tenant')
export class TenantType {
  @Field(() => ID) id: string;
  @Field() name: string;
  @Field() slug: string;
  @Field(() => TenantStatusEnum) status: string;
  @Field() plan: string;
}

@ObjectType()
export class AuthPayload {
  @Field() token: string;
  @Field(() => UserType) user: UserType;
  @Field(() => TenantType) tenant: TenantType;
}

@ObjectType()
export class Me {
  @Field(() => UserType, { nullable: true, description: 'null when the caller is an API key' }) user: UserType | null;
  @Field(() => TenantType) tenant: TenantType;
  @Field(() => RoleEnum, { nullable: true, description: 'null when the caller is an API key' }) role: string | null;
}

@ObjectType('ApiKey')
export class ApiKeyType {
  @Field(() => ID) id: string;
  @Field() name: string;
  @Field() prefix: string;
  @Field(() => [ScopeEnum]) scopes: string[];
  @Field() createdAt: Date;
  @Field(() => Date, { nullable: true }) lastUsedAt: Date | null;
  @Field(() => Date, { nullable: true }) revokedAt: Date | null;
}

@ObjectType()
export class CreateApiKeyPayload {
  @Field({ description: 'Shown once; only a prefix and a hash are stored' }) secret: string;
  @Field(() => ApiKeyType) apiKey: ApiKeyType;
}

export const ApiKeyConnection = ConnectionType(ApiKeyType, 'ApiKey');

@InputType()
export class SignUpInput {
  @Field() email: string;
  @Field() password: string;
  @Field() tenantName: string;
}

@InputType()
export class CreateApiKeyInput {
  @Field() name: string;
  @Field(() => [ScopeEnum]) scopes: string[];
}

@ObjectType('WebhookSettings')
export class WebhookSettingsType {
  @Field(() => String, { nullable: true, description: 'Where account events (spend-limit thresholds) are POSTed; predictions name their own webhookUrl' })
  url: string | null;
  @Field({ description: 'The whsec_… secret that signs every webhook to this tenant (Standard Webhooks); verify deliveries with it' })
  signingSecret: string;
  @Field(() => Date, { nullable: true, description: 'After rotateWebhookSecret: until then the replaced secret also signs, as a second signature' })
  previousSecretExpiresAt: Date | null;
}

@InputType()
export class UpdateWebhookSettingsInput {
  @Field(() => String, { nullable: true, description: 'https URL (http allowed outside production); null removes it' })
  url: string | null;
}
