import type { App } from '../../app';
import type { Principal } from '../../modules/tenancy/principal';
import { ANONYMOUS_LIMIT, PLAN_LIMITS } from '../../modules/tenancy/plans';

/**
 * Takes one token from each bucket the request draws on (the tenant's and, for an API key, the
 * key's, sized by plan; anonymous requests by client address); RATE_LIMITED when one is empty.
 * HTTP requests and WebSocket operations alike.
 */
export async function consumeRequestTokens(app: App, principal: Principal | null, clientAddress: string): Promise<void> {
  if (!principal) {
    await app.rateLimiter.consume([{ key: `ip:${clientAddress}`, ratePerSecond: ANONYMOUS_LIMIT.rps, burst: ANONYMOUS_LIMIT.burst }]);
    return;
  }
  const { plan } = await app.services.tenancy.tenantProfile(principal.tenantId);
  const limits = PLAN_LIMITS[plan];
  const buckets = [{ key: `t:${principal.tenantId}`, ratePerSecond: limits.tenantRps, burst: limits.tenantBurst }];
  if (principal.kind === 'apiKey') buckets.push({ key: `k:${principal.apiKeyId}`, ratePerSecond: limits.keyRps, burst: limits.keyBurst });
  await app.rateLimiter.consume(buckets);
}
