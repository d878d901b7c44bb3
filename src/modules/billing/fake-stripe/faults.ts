/**
 * What an injected fault does:
 * - `error` (default): answers `status` (e.g. 429, 500, 503) without processing the request;
 * - `timeout`: holds the request `delayMs` (default: until the server closes) and then drops the connection, unprocessed;
 * - `delay`: waits `delayMs`, then processes and answers normally (a slow Stripe);
 * - `reset`: drops the connection at once, unprocessed;
 * - `lost_response`: processes the request, then drops the connection instead of answering (Stripe did the work,
 *   the caller cannot know), the case idempotency keys and meter event identifiers exist for.
 */
import { seededRandom } from '../../../platform/random';
export type FaultMode = 'error' | 'timeout' | 'delay' | 'reset' | 'lost_response';

export interface FaultRule {
  /** Matched against the path without the query; all requests when absent. */
  path?: RegExp | string;
  method?: string;
  mode?: FaultMode;
  /** For `error`: 500 when absent. */
  status?: number;
  /** How many matching requests the rule hits, then it is spent; unlimited when absent. `times` is the same. */
  count?: number;
  times?: number;
  /** Hit each matching request with this probability, drawn from an RNG seeded with `seed` (reproducible runs). */
  probability?: number;
  seed?: number;
  delayMs?: number;
  /** For 429s: the `Retry-After` header in seconds (1 when absent). */
  retryAfterSeconds?: number;
  /** Sets `Stripe-Should-Retry`, which the SDK obeys over its own retry rules. */
  shouldRetry?: boolean;
}

interface ActiveRule { rule: FaultRule; left: number; random: () => number }


export class Faults {
  private rules: ActiveRule[] = [];

  add(rule: FaultRule): void {
    this.rules.push({ rule, left: rule.count ?? rule.times ?? Infinity, random: seededRandom(rule.seed ?? 1) });
  }

  clear(): void {
    this.rules = [];
  }

  /** The first live rule that matches and fires for this request, spending one of its hits. */
  take(method: string, path: string): FaultRule | undefined {
    for (const active of this.rules) {
      const { rule } = active;
      if (active.left <= 0) continue;
      if (rule.method && rule.method.toUpperCase() !== method) continue;
      if (rule.path !== undefined && !(typeof rule.path === 'string' ? path.includes(rule.path) : rule.path.test(path))) continue;
      if (rule.probability !== undefined && active.random() >= rule.probability) continue;
      active.left -= 1;
      return rule;
    }
    return undefined;
  }
}

/** A token bucket refilled at `perSecond`, like Stripe's per-endpoint rate limiter. */
export class RateLimiter {
  private tokens: number;
  private last: number;

  constructor(private readonly perSecond: number, private readonly clock: () => number = Date.now) {
    this.tokens = perSecond;
    this.last = clock();
  }

  /** 0 when the request may go, otherwise the seconds until a token is free. */
  take(): number {
    const now = this.clock();
    this.tokens = Math.min(this.perSecond, this.tokens + ((now - this.last) / 1000) * this.perSecond);
    this.last = now;
    if (this.tokens >= 1) {
      this.tokens -= 1;
      return 0;
    }
    return (1 - this.tokens) / this.perSecond;
  }
}
