import { randomBytes } from 'node:crypto';
import { createApp, type App } from '../../src/app';
import type { Env } from '../../src/config/env';
import { startServer, type RunningServer } from '../../src/server';
import { testEnv } from './env';

export interface GqlResponse<T = any> {
  status: number;
  data?: T;
  errors?: Array<{ message: string; extensions?: Record<string, any> }>;
  extensions?: Record<string, any>;
}

export interface TestApi {
  app: App;
  server: RunningServer;
  env: Env;
  gql<T = any>(query: string, variables?: Record<string, unknown>, token?: string): Promise<GqlResponse<T>>;
  close(): Promise<void>;
}

/** A real API (Express + Apollo) on an ephemeral port, over the test database and Redis. */
export async function startTestApi(overrides: Record<string, string> = {}): Promise<TestApi> {
  const env = await testEnv(overrides);
  const app = await createApp(env);
  const server = await startServer(app, { port: 0, host: '127.0.0.1' });
  return {
    app, server, env,
    async gql(query, variables = {}, token) {
      const res = await fetch(server.url, {
        method: 'POST',
        headers: { 'content-type': 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}) },
        body: JSON.stringify({ query, variables }),
      });
      return { status: res.status, ...((await res.json()) as object) };
    },
    async close() {
      await server.close();
      await app.close();
    },
  };
}

export const uniqueEmail = (tag = 'user') => `${tag}-${randomBytes(6).toString('hex')}@example.test`;

const SIGN_UP = `mutation SignUp($input: SignUpInput!) {
  signUp(input: $input) { token user { id email } tenant { id name slug } }
}`;

export interface TestTenant {
  token: string;
  tenantId: string;
  userId: string;
  email: string;
  password: string;
}

/** Signs up a fresh user + tenant through GraphQL. */
export async function signUpTenant(api: TestApi, name = 'Acme'): Promise<TestTenant> {
  const email = uniqueEmail(name.toLowerCase().replace(/\W/g, ''));
  const password = 'correct horse battery';
  const res = await api.gql(SIGN_UP, { input: { email, password, tenantName: name } });
  if (!res.data) throw new Error(`signUp failed: ${JSON.stringify(res.errors)}`);
  const s = res.data.signUp;
  return { token: s.token, tenantId: s.tenant.id, userId: s.user.id, email, password };
}

const CREATE_KEY = `mutation CreateApiKey($input: CreateApiKeyInput!) {
  createApiKey(input: $input) { secret apiKey { id name prefix scopes createdAt } }
}`;

export async function createApiKey(api: TestApi, token: string, scopes: string[], name = 'key'): Promise<{ secret: string; id: string }> {
  const res = await api.gql(CREATE_KEY, { input: { name, scopes } }, token);
  if (!res.data) throw new Error(`createApiKey failed: ${JSON.stringify(res.errors)}`);
  return { secret: res.data.createApiKey.secret, id: res.data.createApiKey.apiKey.id };
}
