import { createServer, type Server, type Socket } from 'node:net';
import type { AddressInfo } from 'node:net';
import { signUpTenant } from '../support/api';
import { startCluster, waitFor, type TestCluster } from '../support/cluster';
import { PREDICT } from '../support/gql';
import { startWebhookReceiver, type WebhookReceiver } from '../support/receiver';

/**
 * Webhook delivery slots are shared by every tenant. A tenant whose receiver hangs (each attempt
 * runs to its timeout) and piles up events must not make another tenant's events wait behind its
 * whole backlog: those go first, as soon as a slot frees.
 */

let cluster: TestCluster;
let hanging: Server;
const held: Socket[] = [];
let good: WebhookReceiver;
beforeAll(async () => {
  // Four slots and 1.5 s attempts, so the hanging receiver's backlog is several rounds deep.
  cluster = await startCluster({ agents: [{ name: 'cpu-fair', devices: 2 }], settings: { webhookTimeoutMs: 1500, webhookConcurrency: 4 } });
  hanging = createServer((socket) => {
    socket.on('error', () => undefined);
    held.push(socket); // reads the request, never answers
  });
  await new Promise<void>((r) => hanging.listen(0, '127.0.0.1', r));
  good = await startWebhookReceiver();
});
afterAll(async () => {
  for (const s of held) s.destroy();
  await new Promise((r) => hanging.close(r));
  await good.close();
  await cluster.close();
});

it('a tenant with a hanging receiver does not hold up another tenant\'s webhooks behind its backlog', async () => {
  const slow = await signUpTenant(cluster.api, 'Hanging receiver');
  const other = await signUpTenant(cluster.api, 'Quick receiver');
  const hangUrl = `http://127.0.0.1:${(hanging.address() as AddressInfo).port}/hook`;
  const predict = (t: typeof slow, url: string) =>
    cluster.api.gql(PREDICT, { input: { service: 'system.echo', input: {}, wait: 10, webhookUrl: url } }, t.token);
  // Twelve events of the first tenant (three rounds of the four slots), then one of the other's.
  for (const r of await Promise.all(Array.from({ length: 12 }, () => predict(slow, hangUrl)))) expect(r.data.predict.status).toBe('SUCCEEDED');
  await waitFor(() => held.length >= 4, 10_000, 'the hanging receiver to hold every slot');
  expect((await predict(other, good.url())).data.predict.status).toBe('SUCCEEDED');
  await waitFor(() => good.received.length === 1, 15_000, 'the other tenant\'s webhook');
  // It went out when the first slot freed, not after the whole first-come backlog (12 attempts).
  expect(held.length).toBeLessThanOrEqual(8);
});
