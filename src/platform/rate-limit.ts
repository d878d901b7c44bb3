import { createHash } from 'node:crypto';
import type { Redis } from 'ioredis';
import { AppError, ErrorCode } from './errors';

export interface Bucket {
  key: string;
  ratePerSecond: number;
  burst: number;
}

/**
 * Token buckets in Redis, checked and consumed atomically in one script so that several API
 * processes share the limits; a request passes only if every bucket (tenant, API key) has a token.
 * Time comes from Redis (TIME) so API hosts' clocks do not matter.
 */
const SCRIPT = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local n = #KEYS
local state = {}
local wait = 0
for i = 1, n do
  local rate = tonumber(ARGV[2 * i - 1])
  local burst = tonumber(ARGV[2 * i])
  local d = redis.call('HMGET', KEYS[i], 'tokens', 'ts')
  local tokens = tonumber(d[1]) or burst
  local ts = tonumber(d[2]) or now
  tokens = math.min(burst, tokens + math.max(0, now - ts) * rate / 1000)
  state[i] = tokens
  if tokens < 1 then wait = math.max(wait, (1 - tokens) / rate) end
end
for i = 1, n do
  local rate = tonumber(ARGV[2 * i - 1])
  local burst = tonumber(ARGV[2 * i])
  local tokens = state[i]
  if wait == 0 then tokens = tokens - 1 end
  redis.call('HSET', KEYS[i], 'tokens', tostring(tokens), 'ts', tostring(now))
  redis.call('PEXPIRE', KEYS[i], math.ceil(burst / rate * 1000) + 1000)
end
return tostring(wait)
`;

const SHA = createHash('sha1').update(SCRIPT).digest('hex');

export class RateLimiter {
  constructor(private readonly redis: Redis, private readonly prefix: string) {}

  /** EVALSHA (the script body is sent only once per Redis restart). */
  private async run(keys: string[], args: Array<string | number>): Promise<unknown> {
    try {
      return await this.redis.evalsha(SHA, keys.length, ...keys, ...args);
    } catch (err) {
      if (!/NOSCRIPT/.test((err as Error).message)) throw err;
      return this.redis.eval(SCRIPT, keys.length, ...keys, ...args);
    }
  }

  /** Consumes one token from every bucket or throws RATE_LIMITED with retryAfterSeconds. */
  async consume(buckets: Bucket[]): Promise<void> {
    if (buckets.length === 0) return;
    const wait = Number(await this.run(
      buckets.map((b) => `${this.prefix}:rl:${b.key}`), buckets.flatMap((b) => [b.ratePerSecond, b.burst]),
    ));
    if (wait > 0) {
      const retryAfterSeconds = Math.max(1, Math.ceil(wait));
      throw new AppError(ErrorCode.RATE_LIMITED, `Rate limit exceeded; retry after ${retryAfterSeconds}s`, { retryAfterSeconds });
    }
  }
}
