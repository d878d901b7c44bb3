import type { Client } from 'pg';
import { verifyWebhookSignature } from '../../src/modules/compute/webhook-signing';
import { WebhookSettingsService } from '../../src/modules/tenancy/webhook-settings';
import { createApiKey, signUpTenant, type TestTenant } from '../support/api';
import { startCluster, waitFor, type TestCluster } from '../support/cluster';
import { ownerClient } from '../support/db';
import { PREDICT } from '../support/gql';
import { startWebhookReceiver, type WebhookReceiver } from '../support/receiver';

const SETTINGS = `query { webhookSettings { url signingSecret previousSecretExpiresAt } }`;
const UPDATE = `mutation($input: UpdateWebhookSettingsInput!) { updateWebhookSettings(input: $input) { url signingSecret previousSecretExpiresAt } }`;
const ROTATE = `mutation { rotateWebhookSecret { url signingSecret previousSecretExpiresAt } }`;

let cluster: TestCluster;
let owner: Client;
let receiver: WebhookReceiver;
let hookUrl: string;

beforeAll(async () => {
  cluster = await startCluster({ agents: [{ name: 'cpu-hooks', devices: 1 }] });
  owner = await ownerClient();
  receiver = await startWebhookReceiver();
  hookUrl = receiver.url();
});
afterAll(async () => {
  await receiver.close();
  await owner.end();
  await cluster.close();
});

const gql = (q: string, v: Record<string, unknown>, t: TestTenant | string) => cluster.api.gql(q, v, typeof t === 'string' ? t : t.token);
const code = (res: { errors?: Array<{ extensions?: Record<string, any> }> }) => res.errors?.[0]?.extensions?.code;

/** Runs an echo prediction with a webhook and returns the delivery of its terminal event. */
async function delivery(t: TestTenant, message: string) {
  const p = (await gql(PREDICT, { input: { service: 'system.echo', input: { message }, wait: 10, webhookUrl: hookUrl } }, t)).data.predict;
  expect(p.status).toBe('SUCCEEDED');
  let hit: WebhookReceiver['received'][number] | undefined;
  await waitFor(() => !!(hit = receiver.received.find((r) => JSON.parse(r.body).data.id === p.id)), 10_000, 'the webhook');
  return hit!;
}

describe('webhook settings', () => {
  it('gives an admin the secret that signs the tenant\'s deliveries, and another tenant a different one', async () => {
    const a = await signUpTenant(cluster.api, 'Hooked');
    const b = await signUpTenant(cluster.api, 'Other');
    const res = await gql(SETTINGS, {}, a);
    expect(res.errors).toBeUndefined();
    const s = res.data.webhookSettings;
    expect(s).toEqual({ url: null, signingSecret: expect.stringMatching(/^whsec_[A-Za-z0-9+/]{32}$/), previousSecretExpiresAt: null });
    const other = (await gql(SETTINGS, {}, b)).data.webhookSettings.signingSecret;
    expect(other).not.toBe(s.signingSecret);

    const d = await delivery(a, 'signed');
    expect(verifyWebhookSignature(s.signingSecret, d.headers, d.body)).toBe(true);
    expect(verifyWebhookSignature(other, d.headers, d.body)).toBe(false);
    expect(d.headers['webhook-signature'].split(' ')).toHaveLength(1);
  });

  it('needs the ADMIN scope: a PREDICT key is FORBIDDEN, an ADMIN key may', async () => {
    const a = await signUpTenant(cluster.api, 'Scoped');
    const predictKey = await createApiKey(cluster.api, a.token, ['PREDICT', 'READ']);
    for (const [q, v] of [[SETTINGS, {}], [UPDATE, { input: { url: hookUrl } }], [ROTATE, {}]] as const) {
      const res = await gql(q, v, predictKey.secret);
      expect(code(res)).toBe('FORBIDDEN');
    }
    expect(code(await gql(SETTINGS, {}, ''))).toBe('UNAUTHENTICATED');
    const before = (await owner.query('SELECT webhook_url, webhook_secret FROM tenants WHERE id = $1', [a.tenantId])).rows[0];
    expect(before.webhook_url).toBeNull(); // the refused update changed nothing
    const adminKey = await createApiKey(cluster.api, a.token, ['ADMIN']);
    expect((await gql(SETTINGS, {}, adminKey.secret)).data.webhookSettings.signingSecret).toBe(before.webhook_secret);
  });

  it('sets and removes the URL with validation, audited, and only for the caller\'s tenant', async () => {
    const a = await signUpTenant(cluster.api, 'Urls');
    const b = await signUpTenant(cluster.api, 'Bystander');
    await gql(UPDATE, { input: { url: 'https://b.example.test/hooks' } }, b);
    for (const url of ['ftp://example.test/x', 'not a url', `https://example.test/${'x'.repeat(2000)}`]) {
      const res = await gql(UPDATE, { input: { url } }, a);
      expect(code(res)).toBe('BAD_USER_INPUT');
      expect(res.errors![0].extensions!.field).toBe('input.url');
    }
    const set = await gql(UPDATE, { input: { url: 'https://a.example.test/hooks' } }, a);
    expect(set.data.updateWebhookSettings.url).toBe('https://a.example.test/hooks');
    expect((await gql(SETTINGS, {}, a)).data.webhookSettings.url).toBe('https://a.example.test/hooks');
    expect((await gql(UPDATE, { input: { url: null } }, a)).data.updateWebhookSettings.url).toBeNull();
    const { rows } = await owner.query('SELECT id, webhook_url FROM tenants WHERE id = ANY($1) ORDER BY id', [[a.tenantId, b.tenantId]]);
    expect(Object.fromEntries(rows.map((r) => [r.id, r.webhook_url]))).toEqual({ [a.tenantId]: null, [b.tenantId]: 'https://b.example.test/hooks' });
    const audits = await owner.query(`SELECT data FROM audit_events WHERE tenant_id = $1 AND action = 'webhooks.url_set' ORDER BY created_at`, [a.tenantId]);
    expect(audits.rows.map((r) => r.data.url)).toEqual(['https://a.example.test/hooks', null]);
  });

  it('refuses a plain-http URL in production', async () => {
    const a = await signUpTenant(cluster.api, 'Prod');
    const principal = await cluster.api.app.services.tenancy.authenticate(a.token);
    const production = new WebhookSettingsService(cluster.api.app.db, { allowPlainHttpWebhooks: false });
    await expect(production.update({ principal }, { url: 'http://a.example.test/hooks' })).rejects.toMatchObject({ code: 'BAD_USER_INPUT', extensions: { field: 'input.url' } });
    await expect(production.update({ principal }, { url: 'https://a.example.test/hooks' })).resolves.toMatchObject({ url: 'https://a.example.test/hooks' });
  });

  it('rotates the secret: both sign for the grace period, then only the new one', async () => {
    const a = await signUpTenant(cluster.api, 'Rotating');
    const old = (await gql(SETTINGS, {}, a)).data.webhookSettings.signingSecret;
    const rotated = (await gql(ROTATE, {}, a)).data.rotateWebhookSecret;
    expect(rotated.signingSecret).toMatch(/^whsec_/);
    expect(rotated.signingSecret).not.toBe(old);
    const graceEnds = Date.parse(rotated.previousSecretExpiresAt);
    expect(Math.abs(graceEnds - (Date.now() + 24 * 3600 * 1000))).toBeLessThan(60_000);

    const during = await delivery(a, 'during the grace period');
    expect(during.headers['webhook-signature'].split(' ')).toHaveLength(2);
    expect(verifyWebhookSignature(rotated.signingSecret, during.headers, during.body)).toBe(true);
    expect(verifyWebhookSignature(old, during.headers, during.body)).toBe(true);

    // The grace period over (moved into the past), the old secret signs no more.
    await owner.query(`UPDATE tenants SET webhook_secret_previous_until = now() - interval '1 second' WHERE id = $1`, [a.tenantId]);
    expect((await gql(SETTINGS, {}, a)).data.webhookSettings.previousSecretExpiresAt).toBeNull();
    const after = await delivery(a, 'after the grace period');
    expect(after.headers['webhook-signature'].split(' ')).toHaveLength(1);
    expect(verifyWebhookSignature(rotated.signingSecret, after.headers, after.body)).toBe(true);
    expect(verifyWebhookSignature(old, after.headers, after.body)).toBe(false);

    // A second rotation replaces the newer secret; the first one is gone for good.
    const again = (await gql(ROTATE, {}, a)).data.rotateWebhookSecret;
    const third = await delivery(a, 'after two rotations');
    expect(verifyWebhookSignature(again.signingSecret, third.headers, third.body)).toBe(true);
    expect(verifyWebhookSignature(rotated.signingSecret, third.headers, third.body)).toBe(true);
    expect(verifyWebhookSignature(old, third.headers, third.body)).toBe(false);
    const audits = await owner.query(`SELECT count(*)::int AS n FROM audit_events WHERE tenant_id = $1 AND action = 'webhooks.secret_rotated'`, [a.tenantId]);
    expect(audits.rows[0].n).toBe(2);
  });
});
