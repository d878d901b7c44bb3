import { createHmac, timingSafeEqual } from 'node:crypto';

/**
 * Standard Webhooks signatures (standardwebhooks.com): HMAC-SHA256 over `${id}.${timestamp}.${body}`
 * with the base64 secret after its `whsec_` prefix, sent as `v1,<base64>`.
 */
export function signWebhook(secret: string, id: string, timestamp: number, body: string): string {
  const key = Buffer.from(secret.replace(/^whsec_/, ''), 'base64');
  return `v1,${createHmac('sha256', key).update(`${id}.${timestamp}.${body}`).digest('base64')}`;
}

/** How long the secret a rotation replaced still signs (beside the new one), so receivers can switch over. */
export const PREVIOUS_SECRET_GRACE_SECONDS = 24 * 3600;

/**
 * The columns of `tenants` that sign its webhooks now: the current secret and, during the grace
 * period after a rotation, the one it replaced (null otherwise).
 */
export const SIGNING_SECRET_COLUMNS =
  'webhook_secret, CASE WHEN webhook_secret_previous_until > now() THEN webhook_secret_previous END AS webhook_secret_previous';

export interface SigningSecrets {
  webhook_secret: string;
  webhook_secret_previous: string | null;
}

/**
 * The `webhook-signature` header: one `v1,` signature per live secret, space-separated, as
 * Standard Webhooks defines for rotation (a receiver accepts any signature it can verify).
 */
export function signatureHeader(secrets: SigningSecrets, id: string, timestamp: number, body: string): string {
  return [secrets.webhook_secret, secrets.webhook_secret_previous]
    .filter((s): s is string => !!s)
    .map((s) => signWebhook(s, id, timestamp, body))
    .join(' ');
}

export function verifyWebhookSignature(
  secret: string, headers: Record<string, string | undefined>, body: string, toleranceSeconds = 300, now = Date.now(),
): boolean {
  const id = headers['webhook-id'];
  const ts = Number(headers['webhook-timestamp']);
  const sigs = headers['webhook-signature'];
  if (!id || !Number.isFinite(ts) || !sigs) return false;
  if (Math.abs(now / 1000 - ts) > toleranceSeconds) return false;
  const expected = Buffer.from(signWebhook(secret, id, ts, body));
  return sigs.split(' ').some((s) => {
    const b = Buffer.from(s);
    return b.length === expected.length && timingSafeEqual(b, expected);
  });
}
