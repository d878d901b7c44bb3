import { createHash } from 'node:crypto';
import { AppError, ErrorCode } from '../../platform/errors';

/**
 * Request fingerprints for idempotency keys: a key reused with a different request is refused
 * with CONFLICT (as Stripe does), the same request gets the key's job again. A fingerprint is the
 * SHA-256 (hex) of a canonical JSON of what the client sent that defines the job, so the order of
 * keys in the client's JSON does not matter. Stored in `jobs.request_hash`; rows from before it
 * have NULL there, which matches any request (nothing to compare with).
 *
 * Computed only for requests with an idempotency key: it reads the whole input (a 10 MB image
 * costs ~20 ms).
 */
export function requestFingerprint(request: unknown): string {
  return createHash('sha256').update(canonicalJson(request)).digest('hex');
}

/**
 * JSON with object keys sorted (recursively, by UTF-16 code units), otherwise as JSON.stringify
 * writes it: `toJSON` is applied, undefined / function / symbol members are left out of objects
 * and written as null in arrays, non-finite numbers are null. Undefined alone is `null`.
 */
export function canonicalJson(value: unknown): string {
  return write(value) ?? 'null';
}

function write(v: unknown): string | undefined {
  if (v !== null && typeof v === 'object' && typeof (v as { toJSON?: unknown }).toJSON === 'function') {
    v = (v as { toJSON(): unknown }).toJSON();
  }
  if (v === null) return 'null';
  switch (typeof v) {
    case 'string':
    case 'boolean':
    case 'number':
      return JSON.stringify(v);
    case 'bigint':
      return JSON.stringify(v); // throws, as JSON.stringify does: no JSON input holds one
    case 'object': {
      if (Array.isArray(v)) return `[${v.map((x) => write(x) ?? 'null').join(',')}]`;
      const parts: string[] = [];
      for (const k of Object.keys(v).sort()) {
        const x = write((v as Record<string, unknown>)[k]);
        if (x !== undefined) parts.push(`${JSON.stringify(k)}:${x}`);
      }
      return `{${parts.join(',')}}`;
    }
    default:
      return undefined; // undefined, function, symbol
  }
}

/** A `predict` call as the client sent it (validated, before its target is resolved or its input prepared). */
export interface PredictRequest {
  service?: string;
  deployment?: string;
  input: unknown;
  webhookUrl?: string | null;
  webhookEvents?: readonly string[] | null;
  deadlineSeconds?: number | null;
  /** Not part of the fingerprint: a client may retry with a different wait. */
  wait?: number;
  idempotencyKey?: string | null;
}

/**
 * A prediction's fingerprint: its target (service or deployment id), its raw input (before images
 * are stored and replaced by references), webhook URL and events (a set: sorted) and deadline.
 * Not `wait`, nor the key itself.
 */
export function predictionFingerprint(r: PredictRequest): string {
  return requestFingerprint({
    kind: 'PREDICTION',
    target: r.deployment !== undefined ? { deployment: r.deployment } : { service: r.service ?? null },
    input: r.input ?? null,
    webhookUrl: r.webhookUrl ?? null,
    webhookEvents: [...new Set(r.webhookEvents ?? [])].sort(),
    deadlineSeconds: r.deadlineSeconds ?? null,
  });
}

/**
 * A training job's fingerprint: every field of its validated `createTrainingJob` input (defaults
 * applied, so leaving out `hardware` is the same request as `hardware: CPU`) but the key itself;
 * webhook events are a set (sorted).
 */
export function trainingFingerprint(r: { idempotencyKey?: string | null; webhookEvents?: readonly string[] | null } & Record<string, unknown>): string {
  const { idempotencyKey: _key, webhookEvents, ...rest } = r;
  return requestFingerprint({ kind: 'TRAINING', request: { ...rest, webhookEvents: [...new Set(webhookEvents ?? [])].sort() } });
}

export const IDEMPOTENCY_CONFLICT = 'This idempotency key was used for a different request; use a new key for a new request';

/**
 * The refusal of a request whose idempotency key names a job made by a different request: one for
 * another target (`sameTarget` false: another service, or another kind of job) or with another
 * fingerprint. A missing fingerprint (a row from before them, an internal caller) matches any:
 * such a request is judged by its target alone.
 */
export function idempotencyConflict(sameTarget: boolean, priorHash: string | null | undefined, requestHash: string | null | undefined): AppError | null {
  const differs = !sameTarget || (priorHash != null && requestHash != null && priorHash !== requestHash);
  return differs ? new AppError(ErrorCode.CONFLICT, IDEMPOTENCY_CONFLICT, { field: 'input.idempotencyKey' }) : null;
}
