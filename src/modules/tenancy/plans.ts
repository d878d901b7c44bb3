import type { Plan } from './tenancy.entities';

/**
 * Request limits per plan: one bucket per tenant and one per API key (see platform/rate-limit.ts),
 * and the subscriptions a tenant may hold open at once on one API process (over WebSocket).
 */
export const PLAN_LIMITS: Record<Plan, { tenantRps: number; tenantBurst: number; keyRps: number; keyBurst: number; subscriptions: number }> = {
  FREE: { tenantRps: 2, tenantBurst: 10, keyRps: 2, keyBurst: 10, subscriptions: 5 },
  STANDARD: { tenantRps: 200, tenantBurst: 400, keyRps: 100, keyBurst: 200, subscriptions: 200 },
  ENTERPRISE: { tenantRps: 2000, tenantBurst: 4000, keyRps: 1000, keyBurst: 2000, subscriptions: 2000 },
};

/** Unauthenticated requests (signUp, logIn) are limited per client address. */
export const ANONYMOUS_LIMIT = { rps: 5, burst: 20 };
