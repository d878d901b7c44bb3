import { WEBHOOK_RETRY_SCHEDULE, post, webhookRetryDelayMs } from './webhooks';

describe('webhook retry schedule', () => {
  it('waits 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h (unit 1 s), the last repeating', () => {
    const mid = () => 0.5; // no jitter
    expect([1, 2, 3, 4, 5, 6, 7, 8, 9].map((n) => webhookRetryDelayMs(n, 1000, mid))).toEqual(
      [5_000, 300_000, 1_800_000, 7_200_000, 18_000_000, 36_000_000, 36_000_000, 36_000_000, 36_000_000],
    );
    // Eight attempts (seven retries) span about 28 hours.
    expect(WEBHOOK_RETRY_SCHEDULE.reduce((a, b) => a + b, 0) / 3600).toBeCloseTo(27.6, 1);
  });

  it('jitters each wait by at most ±10%', () => {
    expect(webhookRetryDelayMs(1, 1000, () => 0)).toBe(4_500);
    expect(webhookRetryDelayMs(1, 1000, () => 0.999999)).toBe(5_500);
    expect(webhookRetryDelayMs(2, 100, () => 0.5)).toBe(30_000);
  });
});

describe('post (one webhook attempt)', () => {
  const servers: Array<import('node:net').Server> = [];
  afterAll(() => Promise.all(servers.map((s) => new Promise((r) => s.close(r)))));

  /** A raw TCP server that answers each connection with `onConnection`. */
  async function serve(onConnection: (socket: import('node:net').Socket) => void): Promise<string> {
    const { createServer } = await import('node:net');
    const server = createServer((socket) => {
      socket.on('error', () => undefined);
      onConnection(socket);
    });
    servers.push(server);
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    return `http://127.0.0.1:${(server.address() as import('node:net').AddressInfo).port}/hook`;
  }

  it('gives up on a receiver that trickles its status line, though the socket is never idle', async () => {
    const url = await serve((socket) => {
      socket.once('data', () => {
        socket.write('HTTP/1.1 200');
        const t = setInterval(() => socket.write(' '), 50);
        socket.on('close', () => clearInterval(t));
      });
    });
    // Without the attempt's deadline this never settles (the socket timeout needs 400 ms of silence).
    await expect(post(url, {}, '{}', true, 400)).rejects.toThrow(/timed out/);
  });

  it('answers with the status at once, without reading a body that never ends', async () => {
    const url = await serve((socket) => {
      socket.once('data', () => {
        socket.write('HTTP/1.1 204 No Content\r\nTransfer-Encoding: chunked\r\n\r\n');
        const t = setInterval(() => socket.write('5\r\nhello\r\n'), 20);
        socket.on('close', () => clearInterval(t));
      });
    });
    await expect(post(url, {}, '{}', true, 2000)).resolves.toBe(204);
  });
});
