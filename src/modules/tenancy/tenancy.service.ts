import { randomBytes, randomUUID } from 'node:crypto';
import { z } from 'zod';
import type { EntityManager } from 'typeorm';
import { RefreshingCache } from '../../platform/cache';
import type { Database } from '../../platform/db/database';
import { run, statement } from '../../platform/db/sql';
import { AppError, ErrorCode, conflict, notFound, unauthenticated } from '../../platform/errors';
import { keysetWhere, paginate, type PageArgs } from '../../platform/pagination';
import { isUuid } from '../../platform/uuid';
import { parseInput } from '../../platform/validation';
import {
  TokenSigner, generateApiKey, hashPassword, isApiKeyShaped, newWebhookSecret, parseApiKey, safeEqualHex, sha256, verifyPassword,
} from './credentials';
import { ROLE_SCOPES, actorOf, requireScope, requireUser, type Principal } from './principal';
import { ApiKey, AuditEvent, Membership, SCOPES, Tenant, User, type Role, type Scope } from './tenancy.entities';

export interface Caller {
  principal: Principal | null;
  requestId?: string;
  /** Aborted when the client goes away (its HTTP request closed, its subscription completed). */
  signal?: AbortSignal;
}

const signUpSchema = z.strictObject({
  email: z.email('must be a valid e-mail address').max(254).transform((e) => e.toLowerCase()),
  password: z.string().min(10, 'must be at least 10 characters').max(200),
  tenantName: z.string().trim().min(1, 'must not be empty').max(100),
});
const apiKeySchema = z.strictObject({
  name: z.string().trim().min(1, 'must not be empty').max(100),
  scopes: z.array(z.enum(SCOPES)).min(1, 'at least one scope').transform((s) => [...new Set(s)]),
});

export type TenantCreatedHook = (tenant: Tenant) => Promise<void>;

// A valid hash to compare against when the e-mail is unknown, so timing does not reveal accounts.
const DUMMY_HASH = hashPassword(randomBytes(16).toString('hex'));
const LAST_USED_GRANULARITY_MS = 60_000;
const PROFILE_TTL_MS = 2_000;
const KEY_CACHE_TTL_MS = 2_000;

type TenantProfile = Pick<Tenant, 'id' | 'plan' | 'status'>;
interface ApiKeyRow {
  id: string; tenant_id: string; secret_hash: string; scopes: Scope[];
  revoked_at: Date | null; last_used_at: Date | null;
}
// One round trip each (migration AuthLookup): the functions set the RLS settings themselves.
const API_KEY_BY_PREFIX = statement('tenancy.api-key', 'SELECT id, tenant_id, secret_hash, scopes, revoked_at, last_used_at FROM nimbus_api_key($1)');
const TENANT_PROFILE = statement('tenancy.profile', 'SELECT id, plan, status FROM nimbus_tenant($1)');
const TOUCH_API_KEY = statement('tenancy.touch-api-key', 'UPDATE api_keys SET last_used_at = now() WHERE id = $1');

/** Tenants, users, memberships, API keys and authentication. */
export class TenancyService {
  private readonly tenantCreatedHooks: TenantCreatedHook[] = [];
  /** Verified API keys by SHA-256, briefly: saves a database read on every request. */
  private readonly keyCache = new RefreshingCache<string, Principal>({ ttlMs: KEY_CACHE_TTL_MS });
  private readonly profiles = new RefreshingCache<string, TenantProfile>({ ttlMs: PROFILE_TTL_MS });

  constructor(
    private readonly db: Database,
    private readonly tokens: TokenSigner,
    private readonly operators: ReadonlySet<string>,
  ) {}

  onTenantCreated(hook: TenantCreatedHook): void {
    this.tenantCreatedHooks.push(hook);
  }

  /**
   * A new tenant with its owner. An address in OPERATOR_EMAILS cannot sign up this way: sign-up
   * checks no one owns the address, so whoever signed up first with a listed address would become
   * an operator. Operator accounts are made with `npm run operator` (`operatorAccount: true`), or
   * signed up before their address is listed.
   */
  async signUp(raw: unknown, opts: { operatorAccount?: boolean } = {}) {
    const input = parseInput(signUpSchema, raw);
    if (!opts.operatorAccount && this.operators.has(input.email)) {
      throw new AppError(ErrorCode.FORBIDDEN, 'This e-mail address is reserved for a platform operator account', { field: 'input.email' });
    }
    const passwordHash = await hashPassword(input.password);
    const tenantId = randomUUID();
    const result = await this.db
      .tenant(tenantId, async (m) => {
        const tenant = await m.save(m.create(Tenant, {
          id: tenantId, name: input.tenantName, slug: slugFor(input.tenantName), webhookSecret: newWebhookSecret(),
        }));
        const user = await m.save(m.create(User, { email: input.email, passwordHash }));
        await m.save(m.create(Membership, { tenantId, userId: user.id, role: 'OWNER' }));
        await audit(m, tenantId, { actorType: 'USER', actorId: user.id }, 'tenant.created', 'Tenant', tenantId);
        return { tenant, user };
      })
      .catch((err) => {
        if (isUniqueViolation(err, 'users_email_key')) throw conflict('An account with this e-mail already exists');
        throw err;
      });
    await Promise.all(this.tenantCreatedHooks.map((h) => h(result.tenant)));
    return { ...result, token: this.issueToken(result.user, tenantId, 'OWNER') };
  }

  async logIn(email: string, password: string) {
    const normalised = email.trim().toLowerCase();
    const user = await this.db.dataSource.getRepository(User).findOneBy({ email: normalised });
    const ok = await verifyPassword(password, user?.passwordHash ?? (await DUMMY_HASH));
    if (!user || !ok) throw unauthenticated('Invalid e-mail or password');
    // The user may belong to several tenants: the oldest membership (their own tenant) is the default.
    return this.db.withSettings({ 'app.user_id': user.id }, async (m) => {
      const membership = await m.findOne(Membership, { where: { userId: user.id }, order: { createdAt: 'ASC' } });
      if (!membership) throw unauthenticated('This account belongs to no tenant');
      await m.query(`SELECT set_config('app.tenant_id', $1, true)`, [membership.tenantId]);
      const tenant = await m.findOneByOrFail(Tenant, { id: membership.tenantId });
      return { token: this.issueToken(user, tenant.id, membership.role), user, tenant };
    });
  }

  /** Resolves a bearer token (JWT or API key) to a principal; any bad credential is UNAUTHENTICATED. */
  async authenticate(token: string): Promise<Principal> {
    if (isApiKeyShaped(token)) return this.authenticateApiKey(token);
    const claims = this.tokens.verify(token);
    if (!claims) throw unauthenticated('Invalid or expired token');
    return {
      kind: 'user', tenantId: claims.tid, userId: claims.sub, role: claims.role,
      scopes: new Set(ROLE_SCOPES[claims.role] ?? []), operator: claims.op === true,
    };
  }

  private async authenticateApiKey(token: string): Promise<Principal> {
    const parsed = parseApiKey(token);
    if (!parsed) throw unauthenticated('Malformed API key');
    const hash = sha256(token);
    const principal = await this.keyCache.get(hash, () => this.lookUpApiKey(parsed.prefix, hash));
    if (!principal) throw unauthenticated('Invalid or revoked API key');
    return principal;
  }

  /** The key's principal, or null when no live key has this secret: one statement (nimbus_api_key). */
  private async lookUpApiKey(prefix: string, hash: string): Promise<Principal | null> {
    const [row] = await run<ApiKeyRow>(this.db.pool, API_KEY_BY_PREFIX, [prefix]);
    if (!row || !safeEqualHex(row.secret_hash, hash) || row.revoked_at) return null;
    if (!row.last_used_at || Date.now() - row.last_used_at.getTime() > LAST_USED_GRANULARITY_MS) {
      await this.db.tenantQuery(row.tenant_id, TOUCH_API_KEY, [row.id]);
    }
    return { kind: 'apiKey', tenantId: row.tenant_id, apiKeyId: row.id, scopes: new Set(row.scopes), operator: false };
  }

  async me(caller: Caller) {
    const p = requireScope(caller.principal, 'READ');
    return this.db.tenant(p.tenantId, async (m) => {
      const [row]: Array<Record<string, string | null>> = await m.query(
        `SELECT t.id, t.name, t.slug, t.status, t.plan, u.id AS user_id, u.email
           FROM tenants t LEFT JOIN users u ON u.id = $2 WHERE t.id = $1`,
        [p.tenantId, p.kind === 'user' ? p.userId : null],
      );
      if (!row) throw unauthenticated('Tenant no longer exists');
      return {
        tenant: { id: row.id, name: row.name, slug: row.slug, status: row.status, plan: row.plan },
        user: row.user_id ? { id: row.user_id, email: row.email } : null,
        role: p.kind === 'user' ? p.role : null,
      };
    });
  }

  async createApiKey(caller: Caller, raw: unknown) {
    const p = requireScope(caller.principal, 'ADMIN');
    const input = parseInput(apiKeySchema, raw);
    // A key cannot mint a key stronger than itself (an [ADMIN] key handing out BILLING or PREDICT).
    const beyond = p.kind === 'apiKey' ? input.scopes.filter((s) => !p.scopes.has(s)) : [];
    if (beyond.length) {
      throw new AppError(ErrorCode.FORBIDDEN, `An API key can only create keys with scopes it has itself (not ${beyond.join(', ')})`, { field: 'input.scopes' });
    }
    const { key, prefix, hash } = generateApiKey();
    const apiKey = await this.db.tenant(p.tenantId, async (m) => {
      const row = await m.save(m.create(ApiKey, {
        tenantId: p.tenantId, name: input.name, prefix, secretHash: hash, scopes: input.scopes,
        createdBy: p.kind === 'user' ? p.userId : null,
      }));
      await audit(m, p.tenantId, actorOf(p), 'api_key.created', 'ApiKey', row.id, { scopes: input.scopes }, caller.requestId);
      return row;
    });
    return { secret: key, apiKey };
  }

  async revokeApiKey(caller: Caller, id: string) {
    const p = requireScope(caller.principal, 'ADMIN');
    const row = await this.db.tenant(p.tenantId, async (m) => {
      const row = isUuid(id) ? await m.findOneBy(ApiKey, { id, tenantId: p.tenantId }) : null;
      if (!row) throw notFound('API key');
      if (!row.revokedAt) {
        row.revokedAt = new Date();
        await m.save(row);
        await audit(m, p.tenantId, actorOf(p), 'api_key.revoked', 'ApiKey', row.id, {}, caller.requestId);
      }
      return row;
    });
    // After the commit: a request that looked the key up before it (and cached it, unrevoked)
    // is forgotten with everything else; every lookup from here on reads `revoked_at`.
    this.forgetApiKey(row.id);
    return row;
  }

  async apiKeys(caller: Caller, args: PageArgs) {
    const p = requireScope(caller.principal, 'ADMIN');
    return this.db.tenant(p.tenantId, (m) =>
      paginate(args, async (after, limit) => {
        const where = keysetWhere(after, 2, 'api_keys');
        const rows: Record<string, unknown>[] = await m.query(
          `SELECT id FROM api_keys WHERE tenant_id = $1 AND ${where.sql} ORDER BY created_at DESC, id DESC LIMIT ${limit}`,
          [p.tenantId, ...where.params],
        );
        const byId = new Map((await m.findBy(ApiKey, rows.map((r) => ({ id: r.id as string })))).map((k) => [k.id, k]));
        return rows.map((r) => byId.get(r.id as string)!);
      }),
    );
  }

  async auditEvents(caller: Caller, limit = 50) {
    const p = requireUser(caller.principal);
    return this.db.tenant(p.tenantId, (m) =>
      m.find(AuditEvent, { where: { tenantId: p.tenantId }, order: { createdAt: 'DESC' }, take: limit }),
    );
  }

  /** Plan and status of a tenant, cached briefly: read on every request for rate limits and gating. */
  async tenantProfile(tenantId: string): Promise<TenantProfile> {
    const value = await this.profiles.get(tenantId, async () => {
      const [row] = await run<TenantProfile>(this.db.pool, TENANT_PROFILE, [tenantId]);
      return row ?? null;
    });
    if (!value) throw unauthenticated('Tenant no longer exists');
    return value;
  }

  /** Revocation takes effect at once in this process and within KEY_CACHE_TTL_MS in others. */
  private forgetApiKey(apiKeyId: string): void {
    this.keyCache.forgetWhere((_, p) => p?.kind === 'apiKey' && p.apiKeyId === apiKeyId);
  }

  forgetTenantProfile(tenantId: string): void {
    this.profiles.forget(tenantId);
  }

  private issueToken(user: User, tenantId: string, role: Role): string {
    return this.tokens.sign({ sub: user.id, tid: tenantId, role, op: this.operators.has(user.email) });
  }
}

export async function audit(
  m: EntityManager, tenantId: string, actor: { actorType: AuditEvent['actorType']; actorId: string | null },
  action: string, objectType: string, objectId: string, data: Record<string, unknown> = {}, requestId?: string,
): Promise<void> {
  await m.insert(AuditEvent, { tenantId, ...actor, action, objectType, objectId, data: data as object, requestId: requestId ?? null });
}

export function isUniqueViolation(err: unknown, constraint?: string): boolean {
  const e = err as { code?: string; constraint?: string; driverError?: { code?: string; constraint?: string } };
  const code = e.driverError?.code ?? e.code;
  const name = e.driverError?.constraint ?? e.constraint;
  return code === '23505' && (!constraint || name === constraint);
}

/** Slugs are global but RLS hides other tenants' rows, so a random suffix keeps them unique instead of a lookup. */
function slugFor(name: string): string {
  const base = name.toLowerCase().normalize('NFKD').replace(/[^a-z0-9]+/g, '-').replace(/^-|-$/g, '').slice(0, 40) || 'tenant';
  return `${base}-${randomBytes(4).toString('hex')}`;
}
