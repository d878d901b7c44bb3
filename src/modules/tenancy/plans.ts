import type { Plan } from './tenancy.entities';

/** Request limits per plan: one bucket per tenant and one per API key (see platform/rate-limit.ts). */
export const PLAN_LIMITS: Record<Plan, { tenantRps: number; tenantBurst: number; keyRps: number; keyBurst: number }> = {
  FREE: { tenantRps: 2, tenantBurst: 10, keyRps: 2, keyBurst: 10 },
  STANDARD: { tenantRps: 200, tenantBurst: 400, keyRps: 100, keyBurst: 200 },
  ENTERPRISE: { tenantRps: 2000, tenantBurst: 4000, keyRps: 1000, keyBurst: 2000 },
};

/** Unauthenticated requests (signUp, logIn) are limited per client address. */
export const ANONYMOUS_LIMIT = { rps: 5, burst: 20 };
