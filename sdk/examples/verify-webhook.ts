/**
 * Receives a prediction's webhook on a local HTTP server and verifies its Standard Webhooks
 * signature with `verifyWebhook` (keep the raw body: the signature covers the exact bytes).
 *
 * The secret is the tenant's `whsec_…` signing secret: NIMBUS_WEBHOOK_SECRET, else read from the
 * API (`webhooks.settings()`, which needs the ADMIN scope; the demo key that `npm start` seeds has it).
 *
 *   npm run sdk:build && node sdk/dist/examples/verify-webhook.js
 */
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Nimbus, verifyWebhook, WebhookVerificationError } from '@nimbus/sdk';

async function main() {
  const nimbus = new Nimbus();
  const secret = process.env.NIMBUS_WEBHOOK_SECRET ?? (await nimbus.webhooks.settings()).signingSecret;
  let resolveEvent: (type: string) => void;
  const received = new Promise<string>((r) => (resolveEvent = r));
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const raw = Buffer.concat(chunks);
      try {
        const event = verifyWebhook<{ message: string }>(req.headers, raw, secret);
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
