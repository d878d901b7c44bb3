/**
 * Pagination and typed errors: walk recent predictions page by page, then provoke a few errors
 * and handle them by class.
 *
 *   npm run sdk:build && node sdk/dist/examples/list-and-errors.js
 */
import { BadUserInputError, Nimbus, NimbusError, NotFoundError, RateLimitedError, UnauthenticatedError } from '@nimbus/sdk';

async function main() {
  const nimbus = new Nimbus({ maxRetries: 3 }); // RATE_LIMITED, SERVICE_UNAVAILABLE and network errors are retried

  let n = 0;
  for await (const p of nimbus.predictions.list({ pageSize: 20, limit: 50 })) {
    console.log(`${p.createdAt}  ${p.status.padEnd(9)}  ${p.service}  ${p.id}`);
    n++;
  }
  console.log(`${n} recent predictions`);

  try {
    await nimbus.predict({ service: 'system.echo', input: { sleepMs: -5 } });
  } catch (err) {
    if (err instanceof BadUserInputError) console.log(`bad input in ${err.field}: ${err.message}`);
    else throw err;
  }
  try {
    await nimbus.predictions.get('00000000-0000-4000-8000-000000000000');
  } catch (err) {
    if (err instanceof NotFoundError) console.log(`not found (request ${err.requestId})`);
    else throw err;
  }
  try {
    await new Nimbus({ apiKey: 'nmb_wrong_key' }).me();
  } catch (err) {
    if (err instanceof UnauthenticatedError) console.log('a wrong key is an UnauthenticatedError');
    else if (err instanceof RateLimitedError) console.log(`rate limited; retry in ${err.retryAfterSeconds} s`);
    else if (err instanceof NimbusError) console.log(`${err.code}: ${err.message}`);
    else throw err;
  }
}

main().catch((err) => {
  console.error(err);
  process.exitCode = 1;
});
