import { createHmac, timingSafeEqual } from 'node:crypto';
import { WebhookVerificationError } from './errors';
import type { Hardware, JobStatus } from './generated/graphql';

/** A job event as Nimbus POSTs it (`type` e.g. `prediction.succeeded`, `prediction.progress`). */
export interface WebhookPayload<TOutput = unknown> {
  type: string;
  timestamp: string;
  data: {
    id: string;
    status: JobStatus;
    progress: number;
    output: TOutput | null;
    error: { code: string; message: string } | null;
    createdAt: string;
    startedAt: string | null;
    completedAt: string | null;
    usage: { seconds: number; hardware: Hardware };
  };
}

export type WebhookHeaders =
  | { get(name: string): string | null }
  | Record<string, string | string[] | undefined>;

export interface VerifyWebhookOptions {
  /** Largest accepted difference between webhook-timestamp and now, in seconds (default 300). */
  toleranceSeconds?: number;
  /** The current time in ms (tests). */
  now?: number;
}

/**
 * Verifies a webhook per Standard Webhooks (standardwebhooks.com), as Nimbus signs them:
 * `webhook-signature` holds space-separated `v1,<base64 HMAC-SHA256>` of
 * `${webhook-id}.${webhook-timestamp}.${rawBody}` keyed with the base64 secret after `whsec_`.
 * Pass the raw body exactly as received (not re-serialized JSON). Returns the parsed event, or
 * throws WebhookVerificationError. Keep `webhook-id` to drop duplicates: retries reuse it.
 */
export function verifyWebhook<TOutput = unknown>(
  headers: WebhookHeaders, rawBody: string | Uint8Array, secret: string, opts: VerifyWebhookOptions = {},
): WebhookPayload<TOutput> {
  const id = header(headers, 'webhook-id');
  const timestamp = header(headers, 'webhook-timestamp');
  const signatures = header(headers, 'webhook-signature');
  if (!id || !timestamp || !signatures) throw new WebhookVerificationError('Missing webhook-id, webhook-timestamp or webhook-signature header');
  if (!/^\d+$/.test(timestamp)) throw new WebhookVerificationError('Invalid webhook-timestamp');
  const ts = Number(timestamp);
  const now = Math.floor((opts.now ?? Date.now()) / 1000);
  const tolerance = opts.toleranceSeconds ?? 300;
  if (now - ts > tolerance) throw new WebhookVerificationError('Webhook timestamp is too old');
  if (ts - now > tolerance) throw new WebhookVerificationError('Webhook timestamp is in the future');

  const key = secretKey(secret);
  const body = typeof rawBody === 'string' ? Buffer.from(rawBody, 'utf8') : Buffer.from(rawBody.buffer, rawBody.byteOffset, rawBody.byteLength);
  const expected = createHmac('sha256', key).update(`${id}.${timestamp}.`).update(body).digest();
  const ok = signatures.split(' ').some((entry) => {
    const comma = entry.indexOf(',');
    if (comma < 0 || entry.slice(0, comma) !== 'v1') return false;
    const given = Buffer.from(entry.slice(comma + 1), 'base64');
    return given.length === expected.length && timingSafeEqual(given, expected);
  });
  if (!ok) throw new WebhookVerificationError('No matching webhook signature');
  try {
    return JSON.parse(body.toString('utf8')) as WebhookPayload<TOutput>;
  } catch {
    throw new WebhookVerificationError('Webhook body is not JSON');
  }
}

function secretKey(secret: string): Buffer {
  const raw = secret.startsWith('whsec_') ? secret.slice('whsec_'.length) : secret;
  const key = Buffer.from(raw, 'base64');
  if (key.length === 0) throw new WebhookVerificationError('Webhook secret is empty');
  return key;
}

function header(headers: WebhookHeaders, name: string): string | undefined {
  if (typeof (headers as { get?: unknown }).get === 'function') return (headers as { get(n: string): string | null }).get(name) ?? undefined;
  const record = headers as Record<string, string | string[] | undefined>;
  let value = record[name];
  if (value === undefined) {
    const key = Object.keys(record).find((k) => k.toLowerCase() === name);
    value = key === undefined ? undefined : record[key];
  }
  return Array.isArray(value) ? value[0] : value;
}
