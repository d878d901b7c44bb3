#!/usr/bin/env node
/** The `nimbus` command (package bin). See `nimbus --help` and sdk/README.md for exit codes. */
import { createInterface } from 'node:readline';
import { run, type CliIO } from './cli/main';

function prompt(question: string, hidden = false): Promise<string> {
  return new Promise((resolve) => {
    const rl = createInterface({ input: process.stdin, output: process.stderr, terminal: true });
    if (hidden) {
      // Echo nothing while the secret is typed.
      (rl as unknown as { _writeToOutput: (s: string) => void })._writeToOutput = (s: string) => {
        if (s.startsWith(question)) process.stderr.write(question);
      };
    }
    rl.question(question, (answer) => {
      rl.close();
      if (hidden) process.stderr.write('\n');
      resolve(answer);
    });
  });
}

const io: CliIO = {
  stdout: process.stdout,
  stderr: process.stderr,
  env: process.env,
  prompt: process.stdin.isTTY ? prompt : undefined,
  onInterrupt(fn) {
    let count = 0;
    const handler = () => {
      // First Ctrl-C: stop waiting and cancel the job; a second one quits at once.
      if (++count > 1) process.exit(130);
      fn();
    };
    process.on('SIGINT', handler);
    return () => process.off('SIGINT', handler);
  },
};

run(process.argv.slice(2), io).then(
  (code) => {
    process.exitCode = code;
  },
  (err) => {
    process.stderr.write(`${err instanceof Error ? err.stack : String(err)}\n`);
    process.exitCode = 1;
  },
);
