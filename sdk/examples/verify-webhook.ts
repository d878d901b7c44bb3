/**
 * Receives a prediction's webhook on a local HTTP server and verifies its Standard Webhooks
 * signature with `verifyWebhook` (keep the raw body: the signature covers the exact bytes).
 *
 * The secret is the tenant's `whsec_…` webhook secret (NIMBUS_WEBHOOK_SECRET). The default
 * below is the demo tenant's development secret that `npm start` seeds.
 *
 *   npm run sdk:build && node sdk/dist/examples/verify-webhook.js
 */
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Nimbus, verifyWebhook, WebhookVerificationError } from '@nimbus/sdk';

const SECRET = process.env.NIMBUS_WEBHOOK_SECRET ?? 'whsec_MDAwMDAwMDAtMDAwMC00MDAwLTgwMDAtMDAwMDAwMDBkZTMw';

async function main() {
  let resolveEvent: (type: string) => void;
  const received = new Promise<string>((r) => (resolveEvent = r));
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const raw = Buffer.concat(chunks);
      try {
        const event = verifyWebhook<{ message: string }>(req.headers, raw, SECRET);
        console.log(`verified ${req.headers['webhook-id']}: ${event.type}`, event.data.output);
        res.writeHead(204).end();
        resolveEvent(event.type);
      } catch (err) {
        console.log(`rejected: ${(err as Error).message}`);
        res.writeHead(err instanceof WebhookVerificationError ? 400 : 500).end();
      }
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/nimbus-webhook`;

  const nimbus = new Nimbus();
  const prediction = await nimbus.predict({ service: 'system.echo', input: { message: 'hello, webhook' }, webhookUrl: url, wait: 0 });
  console.log(`prediction ${prediction.id} queued; waiting for its webhook at ${url}`);
  const timeout = setTimeout(() => {
    console.error('no webhook within 30 s');
    process.exit(1);
  }, 30_000);
  await received;
  clearTimeout(timeout);
  server.close();
}

main().catch((err) => {
  console.error(err);
  process.exitCode = 1;
});
