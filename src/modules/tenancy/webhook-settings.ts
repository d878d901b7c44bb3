import { z } from 'zod';
import type { EntityManager } from 'typeorm';
import type { Database } from '../../platform/db/database';
import { parseInput, requireHttpsWebhook, webhookUrlSchema } from '../../platform/validation';
import { PREVIOUS_SECRET_GRACE_SECONDS } from '../compute/webhook-signing';
import { newWebhookSecret } from './credentials';
import { actorOf, requireScope } from './principal';
import { audit, type Caller } from './tenancy.service';

export interface WebhookSettings {
  /** Where account events (spend-limit thresholds) go; predictions name their own `webhookUrl`. */
  url: string | null;
  /** The `whsec_…` secret every webhook to this tenant is signed with (Standard Webhooks). */
  signingSecret: string;
  /** After a rotation: until when the replaced secret also signs (a second signature in the header). */
  previousSecretExpiresAt: Date | null;
}

const updateSchema = z.strictObject({ url: webhookUrlSchema.nullable() });

/**
 * A tenant's webhook settings: the URL for account events and the signing secret, which admins
 * read (to verify deliveries) and rotate. A rotation keeps the old secret signing for
 * PREVIOUS_SECRET_GRACE_SECONDS beside the new one, so receivers switch without losing events.
 */
export class WebhookSettingsService {
  constructor(private readonly db: Database, private readonly opts: { allowPlainHttpWebhooks: boolean }) {}

  async get(caller: Caller): Promise<WebhookSettings> {
    const p = requireScope(caller.principal, 'ADMIN');
    return this.db.tenant(p.tenantId, (m) => read(m, p.tenantId));
  }

  async update(caller: Caller, raw: unknown): Promise<WebhookSettings> {
    const p = requireScope(caller.principal, 'ADMIN');
    const input = parseInput(updateSchema, raw);
    requireHttpsWebhook('input.url', input.url, this.opts.allowPlainHttpWebhooks);
    return this.db.tenant(p.tenantId, async (m) => {
      await m.query('UPDATE tenants SET webhook_url = $2 WHERE id = $1', [p.tenantId, input.url]);
      await audit(m, p.tenantId, actorOf(p), 'webhooks.url_set', 'Tenant', p.tenantId, { url: input.url }, caller.requestId);
      return read(m, p.tenantId);
    });
  }

  async rotateSecret(caller: Caller): Promise<WebhookSettings> {
    const p = requireScope(caller.principal, 'ADMIN');
    return this.db.tenant(p.tenantId, async (m) => {
      // The row lock orders concurrent rotations: each replaces the secret the one before it set.
      await m.query(
        `UPDATE tenants SET webhook_secret_previous = webhook_secret, webhook_secret = $2,
                webhook_secret_previous_until = now() + make_interval(secs => $3)
          WHERE id = $1`,
        [p.tenantId, newWebhookSecret(), PREVIOUS_SECRET_GRACE_SECONDS],
      );
      await audit(m, p.tenantId, actorOf(p), 'webhooks.secret_rotated', 'Tenant', p.tenantId, {}, caller.requestId);
      return read(m, p.tenantId);
    });
  }
}

async function read(m: EntityManager, tenantId: string): Promise<WebhookSettings> {
  const [row]: Array<{ webhook_url: string | null; webhook_secret: string; until: Date | null }> = await m.query(
    `SELECT webhook_url, webhook_secret, CASE WHEN webhook_secret_previous_until > now() THEN webhook_secret_previous_until END AS until
       FROM tenants WHERE id = $1`,
    [tenantId],
  );
  return { url: row.webhook_url, signingSecret: row.webhook_secret, previousSecretExpiresAt: row.until };
}
