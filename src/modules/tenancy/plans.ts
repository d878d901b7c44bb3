import type { Plan } from './tenancy.entities';

/**
 * Request limits per plan: one bucket per tenant and one per API key (see platform/rate-limit.ts),
 * the subscriptions a tenant may hold open at once on one API process (over WebSocket), and the
 * `predict(wait:)` requests one API process holds for it at once (beyond, they answer at once).
 */
export const PLAN_LIMITS: Record<Plan, { tenantRps: number; tenantBurst: number; keyRps: number; keyBurst: number; subscriptions: number; heldWaits: number }> = {
  FREE: { tenantRps: 2, tenantBurst: 10, keyRps: 2, keyBurst: 10, subscriptions: 5, heldWaits: 10 },
  STANDARD: { tenantRps: 200, tenantBurst: 400, keyRps: 100, keyBurst: 200, subscriptions: 200, heldWaits: 1000 },
  ENTERPRISE: { tenantRps: 2000, tenantBurst: 4000, keyRps: 1000, keyBurst: 2000, subscriptions: 2000, heldWaits: 10_000 },
};

/** Unauthenticated requests (signUp, logIn) are limited per client address. */
export const ANONYMOUS_LIMIT = { rps: 5, burst: 20 };
