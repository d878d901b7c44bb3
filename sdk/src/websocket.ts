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

  constructor(private readonly opts: {
    url: string; token: string | undefined; webSocketImpl: unknown;
    /** Ping every this long (default 10 s) ... */
    keepAliveMs?: number;
    /** ... and close the connection if no pong comes within this (default 5 s). */
    pongTimeoutMs?: number;
  }) {}

  get(): Promise<Client | null> {
    this.client ??= resolveWebSocket(this.opts.webSocketImpl).then((impl) => {
      if (!impl) return null;
      // A connection gone half-open (a NAT or proxy dropped it silently) delivers nothing and
      // fails nothing: without a pong deadline a wait() over it would hang until the OS gave up
      // on the socket. Closed, its subscriptions error and waits fall back to polling.
      let socket: { readyState: number; close(code: number, reason: string): void } | null = null;
      let pongDue: ReturnType<typeof setTimeout> | undefined;
      return createClient({
        url: this.opts.url,
        webSocketImpl: impl,
        connectionParams: this.opts.token ? { authorization: `Bearer ${this.opts.token}` } : {},
        lazy: true,
        retryAttempts: 0,
        keepAlive: this.opts.keepAliveMs ?? 10_000,
        on: {
          connected: (s) => {
            socket = s as typeof socket;
          },
          ping: (received) => {
            if (received) return;
            clearTimeout(pongDue);
            pongDue = setTimeout(() => {
              if (socket?.readyState === 1 /* OPEN */) socket.close(4408, 'No pong: connection lost');
            }, this.opts.pongTimeoutMs ?? 5_000);
          },
          pong: (received) => {
            if (received) clearTimeout(pongDue);
          },
          closed: () => {
            clearTimeout(pongDue);
            socket = null;
          },
        },
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
