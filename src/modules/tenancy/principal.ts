import { forbidden, unauthenticated } from '../../platform/errors';
import type { Role, Scope } from './tenancy.entities';

/** Who is calling: a user (JWT) acting in one tenant, or an application (API key). */
export type Principal =
  | { kind: 'user'; tenantId: string; userId: string; role: Role; scopes: ReadonlySet<Scope>; operator: boolean }
  | { kind: 'apiKey'; tenantId: string; apiKeyId: string; scopes: ReadonlySet<Scope>; operator: false };

/** What each role may do, in scope terms, so users and API keys are checked by one rule. */
export const ROLE_SCOPES: Record<Role, readonly Scope[]> = {
  OWNER: ['PREDICT', 'TRAIN', 'READ', 'BILLING', 'ADMIN'],
  ADMIN: ['PREDICT', 'TRAIN', 'READ', 'BILLING', 'ADMIN'],
  MEMBER: ['PREDICT', 'TRAIN', 'READ'],
  BILLING: ['READ', 'BILLING'],
};

export function requirePrincipal(p: Principal | null): Principal {
  if (!p) throw unauthenticated();
  return p;
}

/** UNAUTHENTICATED without credentials; FORBIDDEN when the role or key lacks the scope. */
export function requireScope(p: Principal | null, scope: Scope): Principal {
  const principal = requirePrincipal(p);
  if (!principal.scopes.has(scope)) {
    throw forbidden(principal.kind === 'apiKey' ? `API key lacks the ${scope} scope` : `Role ${principal.role} may not do this (needs ${scope})`);
  }
  return principal;
}

export function requireUser(p: Principal | null): Extract<Principal, { kind: 'user' }> {
  const principal = requirePrincipal(p);
  if (principal.kind !== 'user') throw forbidden('This operation needs a signed-in user, not an API key');
  return principal;
}

export function requireOperator(p: Principal | null): Principal {
  const principal = requirePrincipal(p);
  if (!principal.operator) throw forbidden('Platform operators only');
  return principal;
}

export const actorOf = (p: Principal) =>
  p.kind === 'user' ? { actorType: 'USER' as const, actorId: p.userId } : { actorType: 'API_KEY' as const, actorId: p.apiKeyId };
