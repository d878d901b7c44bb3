import { Client } from 'pg';
import { testDatabaseUrl } from './env';

/** A connection as the table owner (bypasses RLS): for arranging state and inspecting it in tests. */
export async function ownerClient(): Promise<Client> {
  const c = new Client({ connectionString: await testDatabaseUrl() });
  await c.connect();
  return c;
}

/** A connection as the API's non-owner role (RLS applies), like the API itself. */
export async function appRoleClient(user = 'nimbus_app', password = 'nimbus_app_dev_pw'): Promise<Client> {
  const url = new URL(await testDatabaseUrl());
  url.username = user;
  url.password = password;
  const c = new Client({ connectionString: url.toString() });
  await c.connect();
  return c;
}
