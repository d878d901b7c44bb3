import { createServer, type IncomingMessage } from 'node:http';
import type { AddressInfo } from 'node:net';

export interface Received {
  headers: Record<string, string>;
  body: string;
}

export interface WebhookReceiver {
  /** Every request received so far, in order. */
  received: Received[];
  url(path?: string): string;
  /** Answers the next `n` requests with 500 (after recording them), to make senders retry. */
  failNext(n: number): void;
  close(): Promise<void>;
}

/** A local HTTP server that records what is POSTed to it and answers 204 (tests' webhook endpoint). */
export async function startWebhookReceiver(): Promise<WebhookReceiver> {
  const received: Received[] = [];
  let failing = 0;
  const server = createServer((req: IncomingMessage, res) => {
    let body = '';
    req.on('data', (c) => (body += c));
    req.on('end', () => {
      received.push({ headers: req.headers as Record<string, string>, body });
      if (failing > 0) {
        failing--;
        res.writeHead(500).end();
      } else res.writeHead(204).end();
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as AddressInfo).port;
  return {
    received,
    url: (path = '/hook') => `http://127.0.0.1:${port}${path}`,
    failNext: (n) => {
      failing = n;
    },
    close: () => new Promise((r) => server.close(() => r())),
  };
}
