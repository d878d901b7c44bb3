/**
 * This month's usage by service and the open bill. Needs the billing operations on the server.
 *
 *   npm run sdk:build && node sdk/dist/examples/usage-and-bill.js
 */
import { Nimbus, type Money } from '@nimbus/sdk';

const fmt = (m: Money | null) => (m ? `${(m.amountCents / 100).toFixed(2)} ${m.currency.toUpperCase()}` : 'none');

async function main() {
  const nimbus = new Nimbus();
  const now = new Date();
  const from = new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), 1));
  const usage = await nimbus.usage.get({ from, to: now });
  for (const r of usage.rows) console.log(`${r.service.padEnd(28)} ${r.hardware}  ${r.minutes.toFixed(3).padStart(10)} min  ${fmt(r.cost)}`);
  console.log(`total ${(usage.totalSeconds / 60).toFixed(3)} min, ${fmt(usage.total)}`);

  const bill = await nimbus.bill.current();
  console.log(`open period ${bill.periodStart} – ${bill.periodEnd}: ${fmt(bill.total)} (spend limit ${fmt(bill.spendLimit)})`);
  for (const invoice of await nimbus.invoices.list()) console.log(`invoice ${invoice.number ?? invoice.id}: ${invoice.status} ${fmt(invoice.total)}`);
}

main().catch((err) => {
  console.error(err);
  process.exitCode = 1;
});
