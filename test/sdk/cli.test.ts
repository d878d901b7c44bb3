/**
 * The `nimbus` CLI as users run it: the built binary (sdk/dist/cjs/cli.js, built here with
 * `npm run sdk:build`) as a subprocess against the real system; output and exit codes.
 */
import { execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createApiKey, signUpTenant, type TestTenant } from '../support/api';
import { startCluster, waitFor, type TestCluster } from '../support/cluster';
import { startWebhookReceiver } from '../support/receiver';
import { ownerClient } from '../support/db';
import { startFakeStripe, type FakeStripe } from '../../src/modules/billing/fake-stripe';
import { run as runCli } from '../../sdk/src/cli/main';

const ROOT = join(__dirname, '..', '..');
const BIN = join(ROOT, 'sdk', 'bin', 'nimbus.cjs');

let cluster: TestCluster;
let fake: FakeStripe;
let a: TestTenant;
let b: TestTenant;
let key: string;
let baseUrl: string;
let dir: string;
beforeAll(async () => {
  execFileSync('npm', ['run', '-s', 'sdk:build'], { cwd: ROOT, stdio: 'pipe' });
  fake = await startFakeStripe();
  cluster = await startCluster({
    agents: [{ name: 'cpu-cli', devices: 4 }],
    apiOverrides: { STRIPE_SECRET_KEY: 'sk_test_nimbus_cli', STRIPE_API_BASE: fake.url, STRIPE_WEBHOOK_SECRET: fake.webhookSecret },
  });
  baseUrl = cluster.api.server.url.replace(/\/graphql$/, '');
  a = await signUpTenant(cluster.api, 'CliAlpha');
  b = await signUpTenant(cluster.api, 'CliBeta');
  key = (await createApiKey(cluster.api, a.token, ['PREDICT', 'READ', 'TRAIN', 'BILLING'])).secret;
  dir = mkdtempSync(join(tmpdir(), 'nimbus-cli-'));
}, 120_000);
afterAll(async () => {
  rmSync(dir, { recursive: true, force: true });
  await cluster?.close();
  await fake?.close();
});

interface Run { code: number | null; stdout: string; stderr: string }

/** Runs the bin with a clean environment: no NIMBUS_* from the outside, its own config file. */
function nimbus(args: string[], env: Record<string, string | undefined> = {}, onStderr?: (text: string, child: ReturnType<typeof spawn>) => void): Promise<Run> {
  const clean = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('NIMBUS_')));
  const child = spawn(process.execPath, [BIN, ...args], {
    env: { ...clean, NO_COLOR: '1', NIMBUS_CONFIG: join(dir, 'config.json'), NIMBUS_BASE_URL: baseUrl, NIMBUS_API_KEY: key, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout!.on('data', (c) => (stdout += c));
  child.stderr!.on('data', (c) => {
    stderr += c;
    onStderr?.(stderr, child);
  });
  return new Promise((resolve) => child.on('close', (code) => resolve({ code, stdout, stderr })));
}
const json = (r: Run) => JSON.parse(r.stdout);

describe('nimbus CLI', () => {
  it('prints help and version; a wrong command or flag is a usage error (exit 2)', async () => {
    const help = await nimbus(['--help']);
    expect(help.code).toBe(0);
    expect(help.stdout).toMatch(/Exit codes: 0 ok/);
    expect((await nimbus(['--version'])).stdout.trim()).toMatch(/^\d+\.\d+\.\d+$/);
    expect((await nimbus([])).code).toBe(2);
    const unknown = await nimbus(['frobnicate']);
    expect(unknown).toMatchObject({ code: 2, stderr: expect.stringMatching(/Unknown command "frobnicate"/) });
    expect((await nimbus(['services', '--bogus'])).code).toBe(2);
    // An option before the command runs nothing: a usage error, not a silent success.
    for (const argv of [['--json', 'whoami'], ['--bogus']]) {
      expect(await nimbus(argv)).toMatchObject({ code: 2, stdout: '', stderr: expect.stringMatching(/the command comes first/) });
    }
    expect((await nimbus(['predict', 'system.echo'])).stderr).toMatch(/Give --input, --text or --image/);
    const badJson = await nimbus(['predict', 'system.echo', '--input', '{oops', '--json']);
    expect(badJson.code).toBe(2);
    expect(json(badJson).error).toMatchObject({ code: 'USAGE', message: expect.stringMatching(/not valid JSON/) });
  });

  it('login --api-key saves the credential (mode 600); whoami reads it; logout forgets it', async () => {
    const config = join(dir, 'login', 'config.json');
    const env = { NIMBUS_CONFIG: config, NIMBUS_API_KEY: undefined, NIMBUS_BASE_URL: undefined };
    const login = await nimbus(['login', '--api-key', key, '--base-url', baseUrl], env);
    expect(login).toMatchObject({ code: 0, stdout: expect.stringMatching(/Logged in to .* as an API key \(tenant CliAlpha\)/) });
    expect(statSync(config).mode & 0o777).toBe(0o600);
    expect(JSON.parse(readFileSync(config, 'utf8'))).toEqual({ baseUrl, apiKey: key, credential: 'apiKey' });
    const who = await nimbus(['whoami'], env);
    expect(who).toMatchObject({ code: 0, stdout: expect.stringMatching(/Tenant\s+CliAlpha/) });
    expect(json(await nimbus(['whoami', '--json'], env)).tenant.id).toBe(a.tenantId);

    const bad = await nimbus(['login', '--api-key', 'nmb_bad_bad', '--base-url', baseUrl], { ...env, NIMBUS_CONFIG: join(dir, 'bad.json') });
    expect(bad.code).toBe(3);
    expect(() => statSync(join(dir, 'bad.json'))).toThrow();

    expect((await nimbus(['logout'], env)).code).toBe(0);
    const out = await nimbus(['whoami'], env);
    expect(out).toMatchObject({ code: 3, stderr: expect.stringMatching(/Not logged in/) });
  });

  it('login --email/--password stores a JWT; whoami shows the user and role', async () => {
    const env = { NIMBUS_CONFIG: join(dir, 'jwt.json'), NIMBUS_API_KEY: undefined };
    const login = await nimbus(['login', '--email', b.email, '--password', b.password, '--json'], env);
    expect(login.code).toBe(0);
    expect(json(login)).toMatchObject({ credential: 'jwt', user: { email: b.email }, role: 'OWNER' });
    expect(JSON.parse(readFileSync(join(dir, 'jwt.json'), 'utf8'))).toMatchObject({ credential: 'jwt', email: b.email, apiKey: expect.stringMatching(/^ey/) });
    expect((await nimbus(['whoami'], env)).stdout).toMatch(new RegExp(`User\\s+${b.email.replace(/[.]/g, '\\.')} \\(OWNER\\)`));
    expect((await nimbus(['login', '--email', b.email, '--password', 'wrong password'], env)).code).toBe(3);
  });

  it('services: a table, or JSON', async () => {
    const human = await nimbus(['services']);
    expect(human.code).toBe(0);
    expect(human.stdout).toMatch(/^ID\s+NAME\s+HARDWARE\s+PRICE/);
    expect(human.stdout).toMatch(/system\.echo/);
    const list = json(await nimbus(['services', '--json']));
    expect(list.map((s: { id: string }) => s.id)).toEqual(expect.arrayContaining(['language.sentiment', 'system.echo']));
  });

  it('predict: --input inline and @file, --text, human and --json; a failed job exits 5', async () => {
    const human = await nimbus(['predict', 'system.echo', '--input', '{"message":"hi there"}']);
    expect(human.code).toBe(0);
    expect(human.stdout).toMatch(/^Prediction \S+ SUCCEEDED \(system\.echo, CPU/);
    expect(human.stdout).toMatch(/"message": "hi there"/);

    const file = join(dir, 'input.json');
    writeFileSync(file, JSON.stringify({ message: { from: 'file' } }));
    const fromFile = await nimbus(['predict', 'system.echo', '--input', `@${file}`, '--json']);
    expect(fromFile.code).toBe(0);
    expect(json(fromFile)).toMatchObject({ status: 'SUCCEEDED', output: { message: { from: 'file' } }, id: expect.any(String) });

    const sentiment = await nimbus(['predict', 'language.sentiment', '--text', 'What a wonderful, delightful day!', '--json']);
    expect(json(sentiment)).toMatchObject({ status: 'SUCCEEDED', output: { label: 'positive' } });

    const failed = await nimbus(['predict', 'system.echo', '--input', '{"fail":true}']);
    expect(failed.code).toBe(5);
    expect(failed.stdout).toMatch(/FAILED[\s\S]*JOB_FAILED/);
  });

  it('predict: bad input exits 2 naming the field; --image is read and sent; --wait N leaves a long job running (exit 8)', async () => {
    const bad = await nimbus(['predict', 'system.echo', '--input', '{"nope":1}']);
    expect(bad).toMatchObject({ code: 2, stderr: expect.stringMatching(/input\.nope.*\[BAD_USER_INPUT, request /) });
    const badJson = await nimbus(['predict', 'system.echo', '--input', '{"nope":1}', '--json']);
    expect(json(badJson).error).toMatchObject({ code: 'BAD_USER_INPUT', field: 'input.nope', requestId: expect.any(String) });

    const png = join(dir, 'pixel.png');
    writeFileSync(png, Buffer.from('89504e470d0a1a0a0000000d4948445200000001000000010806000000', 'hex'));
    const image = await nimbus(['predict', 'system.echo', '--image', png, '--json']);
    expect(json(image).error).toMatchObject({ code: 'BAD_USER_INPUT', field: 'input.image' }); // echo takes no image: it was sent
    expect((await nimbus(['predict', 'system.echo', '--image', join(dir, 'missing.png')])).code).toBe(2);

    const slow = await nimbus(['predict', 'system.echo', '--input', '{"sleepMs":5000}', '--wait', '1', '--json']);
    expect(slow.code).toBe(8);
    const p = json(slow);
    expect(['QUEUED', 'ADMITTED', 'RUNNING']).toContain(p.status);
    const canceled = await nimbus(['predictions', 'cancel', p.id]);
    expect(canceled).toMatchObject({ code: 0, stdout: `Prediction ${p.id} CANCELED\n` });
  });

  it('predict shows progress as plain lines when stderr is not a TTY', async () => {
    const r = await nimbus(['predict', 'system.echo', '--input', '{"message":"p","sleepMs":900,"progressSteps":3}']);
    expect(r.code).toBe(0);
    const lines = r.stderr.trim().split('\n');
    expect(lines.every((l) => /^prediction \S+: (QUEUED|ADMITTED|RUNNING|SUCCEEDED) \d+%$/.test(l))).toBe(true);
    expect(lines.some((l) => / RUNNING (33|66|67)%$/.test(l))).toBe(true);
    expect(lines.at(-1)).toMatch(/SUCCEEDED 100%$/);
  });

  it('Ctrl-C while waiting cancels the prediction (exit 130)', async () => {
    let id = '';
    const r = await nimbus(['predict', 'system.echo', '--input', '{"sleepMs":30000}'], {}, (text, child) => {
      const m = /prediction (\S+): RUNNING/.exec(text);
      if (m && !id) {
        id = m[1]!;
        child.kill('SIGINT');
      }
    });
    expect(r.code).toBe(130);
    expect(r.stderr).toMatch(/Interrupted: the prediction was canceled/);
    const get = json(await nimbus(['predictions', 'get', id, '--json']));
    expect(get.status).toBe('CANCELED');
  });

  it('predictions get/list; another tenant\'s id exits 4; a bad key exits 3; an unreachable API exits 7', async () => {
    const p = json(await nimbus(['predict', 'system.echo', '--input', '{"message":"listed"}', '--json']));
    const get = await nimbus(['predictions', 'get', p.id]);
    expect(get.code).toBe(0);
    expect(get.stdout).toMatch(new RegExp(`Prediction ${p.id} SUCCEEDED`));
    const list = await nimbus(['predictions', 'list', '--limit', '3']);
    expect(list.stdout).toMatch(/^ID\s+SERVICE\s+STATUS\s+CREATED/);
    expect(list.stdout.trim().split('\n')).toHaveLength(4);
    expect(json(await nimbus(['predictions', 'list', '--limit', '2', '--json']))).toHaveLength(2);

    const otherTenant = await nimbus(['predictions', 'get', p.id], { NIMBUS_API_KEY: b.token });
    expect(otherTenant).toMatchObject({ code: 4, stderr: expect.stringMatching(/not found/i) });
    expect((await nimbus(['whoami'], { NIMBUS_API_KEY: 'nmb_nope_nope' })).code).toBe(3);
    const down = await nimbus(['whoami', '--json'], { NIMBUS_BASE_URL: 'http://127.0.0.1:9' });
    expect(down.code).toBe(7);
    expect(json(down).error.code).toBe('NETWORK_ERROR');
  });

  it('webhooks: settings, set-url, rotate-secret, deliveries and resend; a key without ADMIN exits 3', async () => {
    const admin = { NIMBUS_API_KEY: a.token };
    const shown = await nimbus(['webhooks'], admin);
    expect(shown).toMatchObject({ code: 0, stdout: expect.stringMatching(/^URL +—\nSigning secret +whsec_\S+\n$/) });
    const set = json(await nimbus(['webhooks', 'set-url', 'https://hooks.example.test/nimbus', '--json'], admin));
    expect(set.url).toBe('https://hooks.example.test/nimbus');
    expect((await nimbus(['webhooks', 'set-url', 'ftp://nope'], admin)).code).toBe(2);
    const rotated = await nimbus(['webhooks', 'rotate-secret'], admin);
    expect(rotated.stdout).toMatch(/Old secret +still signs until \d{4}-/);
    expect(json(await nimbus(['webhooks', 'clear-url', '--json'], admin)).url).toBeNull();

    const receiver = await startWebhookReceiver();
    try {
      const p = json(await nimbus(['predict', 'system.echo', '--input', '{"message":"hooked"}', '--webhook-url', receiver.url(), '--json']));
      await waitFor(async () => json(await nimbus(['webhooks', 'deliveries', '--job', p.id, '--json'])).length === 1, 10_000, 'the delivery');
      const table = await nimbus(['webhooks', 'deliveries', '--job', p.id], admin);
      expect(table.stdout).toMatch(/^WHEN\s+JOB\s+EVENT\s+ATTEMPT\s+RESULT\s+URL\n.*prediction\.succeeded\s+1\s+204\s/s);
      const resent = await nimbus(['webhooks', 'resend', p.id], admin);
      expect(resent).toMatchObject({ code: 0, stdout: expect.stringMatching(/^Resending prediction\.succeeded to http/) });
      await waitFor(() => receiver.received.length === 2, 10_000, 'the resend');
    } finally {
      await receiver.close();
    }
    expect((await nimbus(['webhooks'])).code).toBe(3); // the test key has no ADMIN scope
  });
});

describe('nimbus CLI: datasets, training, deployments, usage and bill', () => {
  let datasetId: string;
  let modelVersionId: string;

  it('datasets upload profiles the file; datasets get lists its versions', async () => {
    const rows = Array.from({ length: 120 }, (_, i) => {
      const x = (i * 37 % 100) / 100;
      const y = (i * 61 % 100) / 100;
      return `${x},${y},${x + y > 1 ? 'yes' : 'no'}`;
    });
    const file = join(dir, 'points.csv');
    writeFileSync(file, `x,y,label\n${rows.join('\n')}\n`);
    const human = await nimbus(['datasets', 'upload', file]);
    expect(human).toMatchObject({ code: 0, stdout: expect.stringMatching(/^Dataset points \(\S+\) version 1: 120 rows\nColumns: x:NUMBER, y:NUMBER, label:CATEGORY\n$/) });
    const again = json(await nimbus(['datasets', 'upload', file, '--name', 'points2', '--json']));
    datasetId = again.dataset.id;
    expect(again).toMatchObject({ dataset: { name: 'points2', format: 'CSV' }, version: { version: 1, rowCount: 120 } });
    const get = await nimbus(['datasets', 'get', datasetId]);
    expect(get.stdout).toMatch(/^Dataset points2 \(\S+\)\nVERSION\s+ID\s+ROWS\s+CREATED\n\s+1\s+\S+\s+120\s/);
    expect(await nimbus(['datasets', 'upload', join(dir, 'nope.csv')])).toMatchObject({ code: 2, stderr: expect.stringMatching(/Cannot read .*nope\.csv/) });
  });

  it('train shows plain progress lines off a TTY and prints the leaderboard; --json gives the job', async () => {
    const r = await nimbus(['train', '--dataset', datasetId, '--task', 'tabular_classification', '--target', 'label', '--automl-trials', '2',
      '--algorithms', 'logistic_regression,decision_tree', '--name', 'points']);
    expect(r.code).toBe(0);
    expect(r.stderr.trim().split('\n').every((l) => /^training \S+: (QUEUED|ADMITTED|RUNNING|SUCCEEDED) \d+% trials \d+\/\d+$/.test(l))).toBe(true);
    expect(r.stdout).toMatch(/^Training job \S+ SUCCEEDED\nBest trial: \S+ .*\nModel version 1 \((\S+)\)/);
    expect(r.stdout).toMatch(/\n#\s+ALGORITHM\s+F1MACRO\s+STATUS\n1\s+\S+\s+\d\.\d{4}\s+SUCCEEDED\n2\s/);
    modelVersionId = /Model version 1 \((\S+)\)/.exec(r.stdout)![1]!;
    const quick = await nimbus(['train', '--dataset', datasetId, '--task', 'tabular_classification', '--target', 'label', '--algorithm', 'decision_tree', '--name', 'points', '--json']);
    expect(json(quick)).toMatchObject({ status: 'SUCCEEDED', modelVersion: { version: 2 }, trials: [{ algorithm: 'decision_tree' }] });
    const models = await nimbus(['models']);
    expect(models.stdout).toMatch(/^MODEL\s+TASK\s+VERSION\s+VERSION ID\s+METRICS\npoints\s+TABULAR_CLASSIFICATION\s+2\s/);
    const bad = await nimbus(['train', '--dataset', datasetId, '--task', 'tabular_classification', '--target', 'nope']);
    expect(bad).toMatchObject({ code: 2, stderr: expect.stringMatching(/targetColumn/) });
    expect((await nimbus(['train', '--task', 'tabular_classification'])).code).toBe(2);
  });

  it('on a TTY, train redraws a progress bar and the trial leaderboard in place (in-process, fake terminal)', async () => {
    const out: string[] = [];
    const err: string[] = [];
    const code = await runCli(['train', '--dataset', datasetId, '--task', 'tabular_classification', '--target', 'label', '--automl-trials', '2',
      '--algorithms', 'logistic_regression,decision_tree', '--name', 'points-tty'], {
      stdout: { write: (t: string) => out.push(t), isTTY: true, columns: 120 },
      stderr: { write: (t: string) => err.push(t), isTTY: true, columns: 120 },
      env: { NIMBUS_BASE_URL: baseUrl, NIMBUS_API_KEY: key, NIMBUS_CONFIG: join(dir, 'tty.json'), NO_COLOR: '1' },
    });
    expect(code).toBe(0);
    const frames = err.join('');
    expect(frames).toMatch(/\x1b\[\d+A\r\x1b\[J/); // cursor up + clear: redrawn in place
    const last = frames.split('\x1b[J').at(-1)!;
    expect(last).toMatch(/^ {2}Training \S+ SUCCEEDED +\[█{24}\] 100% {2}\d+s\n {2}trials 2\/2 done\n\n {2}#\s+ALGORITHM\s+F1MACRO\s+STATUS\n/);
    expect(out.join('')).toMatch(/^Training job \S+ SUCCEEDED/);
  });

  it('deployments create/get/list and predict --deployment', async () => {
    const created = json(await nimbus(['deployments', 'create', '--name', 'points-prod', '--model-version', modelVersionId, '--json']));
    expect(created).toMatchObject({ name: 'points-prod', modelVersion: { id: modelVersionId, version: 1 } });
    expect((await nimbus(['deployments', 'get', created.id])).stdout).toMatch(/^Deployment points-prod \(\S+\) \S+: points v1 \(\S+\) on CPU\n$/);
    expect((await nimbus(['deployments', 'list'])).stdout).toMatch(/points-prod/);
    const p = await nimbus(['predict', '--deployment', created.id, '--input', '{"rows":[{"x":0.9,"y":0.9},{"x":0.1,"y":0.05}]}', '--json']);
    expect(json(p)).toMatchObject({ status: 'SUCCEEDED', output: { predictions: [{ label: 'yes' }, { label: 'no' }] } });
  });

  it('usage --month prints a table and a bar chart; bill prints the open period; --json for both', async () => {
    expect((await nimbus(['predict', 'system.echo', '--input', '{"sleepMs":100}'])).code).toBe(0);
    const usage = await nimbus(['usage', '--month']);
    expect(usage.code).toBe(0);
    expect(usage.stdout).toMatch(/\nTOTAL\s+[\d.]+\s+\$\d+\.\d\d\n/);
    expect(usage.stdout).toMatch(/^Usage \d{4}-\d{2} \(UTC\)\n\nSERVICE\s+HARDWARE\s+MINUTES\s+COST\n/);
    expect(usage.stdout).toMatch(/system\.echo\s+CPU\s+[\d.]+\s+\$\d+\.\d\d/);
    expect(usage.stdout).toMatch(/\nsystem\.echo \(CPU\)\s+█*[▏▎▍▌▋▊▉]?\s+[\d.]+ min/);
    const month = new Date().toISOString().slice(0, 7);
    const j = json(await nimbus(['usage', '--month', month, '--json']));
    expect(j).toMatchObject({ from: `${month}-01T00:00:00.000Z`, total: { currency: 'usd' }, rows: expect.arrayContaining([expect.objectContaining({ service: 'system.echo' })]) });
    expect(json(await nimbus(['usage', '--month', '1999-01', '--json'])).rows).toEqual([]);
    expect((await nimbus(['usage', '--month', '2024-13'])).code).toBe(2);

    const bill = await nimbus(['bill']);
    expect(bill).toMatchObject({ code: 0, stdout: expect.stringMatching(/^Billing period \d{4}-\d{2}-\d{2} – \d{4}-\d{2}-\d{2}\n[\s\S]*Total\s+\$\d+\.\d\d\nSpend limit\s+none\n$/) });
    expect(json(await nimbus(['bill', '--json']))).toMatchObject({ total: { currency: 'usd' }, spendLimit: null });
    expect((await nimbus(['invoices'])).stdout).toBe('No invoices yet.\n');
  });
});

describe('sdk/examples (built to sdk/dist/examples) against the same server', () => {
  const example = (name: string, args: string[] = [], env: Record<string, string> = {}) => {
    const clean = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('NIMBUS_')));
    const child = spawn(process.execPath, [join(ROOT, 'sdk', 'dist', 'examples', `${name}.js`), ...args], {
      env: { ...clean, NIMBUS_BASE_URL: baseUrl, NIMBUS_API_KEY: key, ...env }, stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    child.stdout!.on('data', (c) => (out += c));
    child.stderr!.on('data', (c) => (out += c));
    return new Promise<{ code: number | null; out: string }>((resolve) => child.on('close', (code) => resolve({ code, out })));
  };

  it('predict-sentiment, wait-with-progress, list-and-errors and verify-webhook run and print their results', async () => {
    const owner = await ownerClient();
    const { rows: [t] } = await owner.query('SELECT webhook_secret FROM tenants WHERE id = $1', [a.tenantId]).finally(() => owner.end());
    const [sentiment, progress, listing, webhook] = await Promise.all([
      example('predict-sentiment', ['I really love this, it is great']),
      example('wait-with-progress'),
      example('list-and-errors'),
      example('verify-webhook', [], { NIMBUS_WEBHOOK_SECRET: t.webhook_secret }),
    ]);
    expect(sentiment).toMatchObject({ code: 0, out: expect.stringMatching(/^positive \(0\.\d\d\)/) });
    expect(progress).toMatchObject({ code: 0, out: expect.stringMatching(/RUNNING +\[#+\.+\] \d+%[\s\S]*SUCCEEDED \{ message: 'done!' \}/) });
    expect(listing).toMatchObject({ code: 0, out: expect.stringMatching(/recent predictions\nbad input in input\.sleepMs: [\s\S]*not found \(request [\s\S]*UnauthenticatedError/) });
    expect(webhook).toMatchObject({ code: 0, out: expect.stringMatching(/verified msg_\S+: prediction\.succeeded \{ message: 'hello, webhook' \}/) });
  });
});
