import { createServer as createHttpServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { post } from '../../src/modules/compute/control-plane/webhooks';

/** The webhook sender's POST against local receivers (private addresses allowed, as in tests). */

function listen(server: ReturnType<typeof createHttpServer>, host: string): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, host, () => resolve((server.address() as AddressInfo).port));
  });
}

describe('webhook POST (control-plane/webhooks.ts post)', () => {
  let server: ReturnType<typeof createHttpServer>;
  let port: number;
  let hits = 0;
  beforeAll(async () => {
    server = createHttpServer((req, res) => {
      hits++;
      req.resume();
      res.writeHead(204).end();
    });
    port = await listen(server, '127.0.0.1');
  });
  afterAll(() => {
    server.closeAllConnections();
    server.close();
  });

  it('delivers to a URL with a host name: the pinned lookup answers Node\'s all-addresses form (autoSelectFamily, Node >= 20)', async () => {
    // `localhost` resolves to 127.0.0.1: private addresses are allowed here (test mode), so the
    // only thing between the sender and the receiver is the pinned lookup. In production the same
    // code path runs for every https://hooks.example.com/... URL.
    const before = hits;
    const status = await post(`http://localhost:${port}/hook`, { 'content-type': 'application/json' }, '{}', true, 5000)
      .catch((e: Error) => `error: ${e.message}`);
    expect(status).toBe(204);
    expect(hits).toBe(before + 1);
  });

  it('delivers to a URL with an IPv6 literal (the brackets are not part of the address)', async () => {
    const v6 = createHttpServer((req, res) => {
      req.resume();
      res.writeHead(204).end();
    });
    let v6port: number;
    try {
      v6port = await listen(v6, '::1');
    } catch {
      return; // no IPv6 loopback on this machine: nothing to show
    }
    try {
      const status = await post(`http://[::1]:${v6port}/hook`, {}, '{}', true, 5000).catch((e: Error) => `error: ${e.message}`);
      expect(status).toBe(204);
    } finally {
      v6.closeAllConnections();
      v6.close();
    }
  });
});

