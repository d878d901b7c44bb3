import { createClient, type Client } from 'graphql-ws/client';

/**
 * The WebSocket constructor for subscriptions: the `webSocketImpl` option, else the platform's
 * global WebSocket (browsers, Deno, Bun, Node ≥ 22), else the optional `ws` package (Node 20),
 * else none: waits then poll. `false` or `null` turns WebSockets off.
 */
export async function resolveWebSocket(option: unknown): Promise<unknown | null> {
  if (option === false || option === null) return null;
  if (option !== undefined) return option;
  const global = (globalThis as { WebSocket?: unknown }).WebSocket;
  if (typeof global === 'function') return global;
  try {
    const mod = (await import('ws')) as unknown as { default?: unknown; WebSocket?: unknown };
    const impl = mod.WebSocket ?? mod.default ?? mod;
    return typeof impl === 'function' ? impl : (impl as { WebSocket?: unknown }).WebSocket ?? null;
  } catch {
    return null;
  }
}

/** One lazily opened graphql-ws connection per client, closed when no subscription is active. */
export class SubscriptionConnection {
  private client: Promise<Client | null> | null = null;

  constructor(private readonly opts: { url: string; token: string | undefined; webSocketImpl: unknown }) {}

  get(): Promise<Client | null> {
    this.client ??= resolveWebSocket(this.opts.webSocketImpl).then((impl) => {
      if (!impl) return null;
      return createClient({
        url: this.opts.url,
        webSocketImpl: impl,
        connectionParams: this.opts.token ? { authorization: `Bearer ${this.opts.token}` } : {},
        lazy: true,
        retryAttempts: 0,
        keepAlive: 10_000,
      });
    });
    return this.client;
  }

  async close(): Promise<void> {
    const c = await this.client;
    this.client = null;
    await c?.dispose();
  }
}
