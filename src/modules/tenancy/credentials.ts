import { createHash, createSecretKey, randomBytes, scrypt, timingSafeEqual, type KeyObject } from 'node:crypto';
import { promisify } from 'node:util';
import jwt from 'jsonwebtoken';
import type { Role } from './tenancy.entities';

const scryptAsync = promisify(scrypt) as (pw: string, salt: Buffer, len: number, opts: object) => Promise<Buffer>;
// N=2^15, r=8: ~32 MiB and tens of ms per hash — memory-hard, as OWASP recommends for scrypt.
const SCRYPT = { N: 1 << 15, r: 8, p: 1, maxmem: 64 * 1024 * 1024 };

/** `scrypt$N$r$p$salt$hash`, so parameters can be raised later without breaking old hashes. */
export async function hashPassword(password: string): Promise<string> {
  const salt = randomBytes(16);
  const hash = await scryptAsync(password, salt, 32, SCRYPT);
  return ['scrypt', SCRYPT.N, SCRYPT.r, SCRYPT.p, salt.toString('base64'), hash.toString('base64')].join('$');
}

export async function verifyPassword(password: string, stored: string): Promise<boolean> {
  const [alg, n, r, p, salt, hash] = stored.split('$');
  if (alg !== 'scrypt') return false;
  const expected = Buffer.from(hash, 'base64');
  const actual = await scryptAsync(password, Buffer.from(salt, 'base64'), expected.length, {
    N: Number(n), r: Number(r), p: Number(p), maxmem: SCRYPT.maxmem,
  });
  return timingSafeEqual(actual, expected);
}

// ---- API keys: nmb_<prefix>_<secret>; the prefix finds the row, the SHA-256 of the whole key proves it.
const KEY_RE = /^nmb_([A-Za-z0-9]{12})_([A-Za-z0-9_-]{43})$/;

export function generateApiKey(): { key: string; prefix: string; hash: string } {
  const prefix = randomBytes(9).toString('base64url').replace(/[-_]/g, 'x').slice(0, 12);
  const key = `nmb_${prefix}_${randomBytes(32).toString('base64url')}`;
  return { key, prefix, hash: sha256(key) };
}

export const isApiKeyShaped = (token: string) => token.startsWith('nmb_');
export const parseApiKey = (token: string): { prefix: string } | null => {
  const m = KEY_RE.exec(token);
  return m ? { prefix: m[1] } : null;
};
export const sha256 = (s: string) => createHash('sha256').update(s).digest('hex');

export function safeEqualHex(a: string, b: string): boolean {
  const x = Buffer.from(a, 'hex');
  const y = Buffer.from(b, 'hex');
  return x.length === y.length && timingSafeEqual(x, y);
}

// ---- JWT (HS256) with a key id header, so secrets can rotate: old kids stay valid until expiry.
export interface TokenClaims {
  sub: string; // user id
  tid: string; // tenant id
  role: Role;
  op?: boolean; // platform operator
}

export class TokenSigner {
  // Key objects, not strings: given a string, jsonwebtoken first tries (and fails) to parse it as
  // a PEM key on every call, ~40x slower than verifying.
  private readonly keys: Map<string, KeyObject>;

  constructor(
    secrets: Map<string, string>,
    private readonly currentKid: string,
    private readonly ttlSeconds: number,
  ) {
    this.keys = new Map([...secrets].map(([kid, secret]) => [kid, createSecretKey(Buffer.from(secret))]));
  }

  sign(claims: TokenClaims): string {
    return jwt.sign(claims, this.keys.get(this.currentKid)!, {
      algorithm: 'HS256', keyid: this.currentKid, expiresIn: this.ttlSeconds, issuer: 'nimbus',
    });
  }

  /** Returns the claims, or null for any invalid, expired or unknown-key token. */
  verify(token: string): TokenClaims | null {
    const decoded = jwt.decode(token, { complete: true });
    const kid = decoded?.header.kid;
    const secret = kid ? this.keys.get(kid) : undefined;
    if (!secret) return null;
    try {
      const payload = jwt.verify(token, secret, { algorithms: ['HS256'], issuer: 'nimbus' }) as jwt.JwtPayload;
      if (typeof payload.sub !== 'string' || typeof payload.tid !== 'string' || typeof payload.role !== 'string') return null;
      return { sub: payload.sub, tid: payload.tid, role: payload.role as Role, op: payload.op === true };
    } catch {
      return null;
    }
  }
}

/** A Standard Webhooks signing secret: `whsec_` + 24 random bytes in base64. */
export const newWebhookSecret = () => `whsec_${randomBytes(24).toString('base64')}`;
