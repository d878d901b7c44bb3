import 'reflect-metadata';
import { parseArgs } from 'node:util';
import { createApp } from '../app';
import { loadEnvOrExit } from '../bootstrap';
import { operatorEmails } from '../config/env';
import { prepareDatabase } from '../platform/db/prepare';

/**
 * `npm run operator -- --email ops@example.com --password '…' [--tenant-name Platform]`: creates a
 * platform operator's account (a user owning a tenant of its own). Public sign-up refuses the
 * addresses in OPERATOR_EMAILS, so nobody can claim an operator address before its owner: whoever
 * runs this has the database's credentials. The address must be in OPERATOR_EMAILS of the API for
 * its tokens to carry the operator role.
 */
async function main() {
  const { values } = parseArgs({ options: { email: { type: 'string' }, password: { type: 'string' }, 'tenant-name': { type: 'string' } } });
  if (!values.email || !values.password) throw new Error('usage: npm run operator -- --email <e-mail> --password <password> [--tenant-name <name>]');
  const env = loadEnvOrExit();
  await prepareDatabase(env);
  const app = await createApp(env);
  try {
    await app.services.tenancy.signUp({ email: values.email, password: values.password, tenantName: values['tenant-name'] ?? 'Platform' }, { operatorAccount: true });
    const listed = operatorEmails(env).has(values.email.trim().toLowerCase());
    console.log(`created ${values.email}${listed ? '' : ' (not in OPERATOR_EMAILS yet: add it there for the operator role)'}`);
  } finally {
    await app.close();
  }
}
main().catch((err) => {
  console.error(err instanceof Error ? err.message : err);
  process.exit(1);
});
