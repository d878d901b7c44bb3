#!/usr/bin/env node
// The `nimbus` bin: runs the built CLI, dist/cjs/cli.js (`npm run sdk:build`). npm links a bin at
// install time only when its file exists, so the link points at this committed file, not into dist/.
let cli;
try {
  cli = require.resolve('../dist/cjs/cli.js');
} catch {
  console.error('nimbus: the SDK is not built yet; run `npm run sdk:build` in the repository root');
  process.exit(1);
}
require(cli);
