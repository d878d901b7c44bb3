import type { Logger } from 'pino';
import type { Principal } from '../../modules/tenancy/principal';
import type { AppServices } from '../../app';

/** What every resolver receives. The tenant comes only from the principal, never from arguments. */
export interface GqlContext {
  requestId: string;
  principal: Principal | null;
  services: AppServices;
  log: Logger;
  cost?: { requested: number; limit: number };
  /** scheme://host the request came to (for URLs the API hands out, e.g. signed upload URLs). */
  origin?: string;
  /** Aborted when the client goes away: an HTTP request closed before its answer, a subscription completed or disconnected. */
  signal?: AbortSignal;
}
