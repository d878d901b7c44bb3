import { readFile } from 'node:fs/promises';
import { Nimbus, DEFAULT_BASE_URL } from '../client';
import {
  BadUserInputError, ConflictError, ForbiddenError, NetworkError, NimbusError, NotFoundError, PaymentRequiredError,
  QueryTooCostlyError, QuotaExceededError, RateLimitedError, ServiceUnavailableError, SpendLimitReachedError,
  UnauthenticatedError, WaitTimeoutError,
} from '../errors';
import { imageToInput } from '../images';
import type { TrainingTask } from '../generated/graphql';
import type { Metrics, Prediction, TrainingJob, Trial, WebhookSettings } from '../types';
import { isTerminal } from '../wait';
import { SDK_VERSION } from '../version';
import { int, parse, str, UsageError, type FlagSpec, type Parsed } from './args';
import { configPath, readConfig, writeConfig, type CliConfig } from './config';
import {
  barChart, colors, LiveBlock, minutes, money, progressBar, seconds, SPINNER, statusColor, table, type Colors, type Out,
} from './format';

/** Exit codes (documented in sdk/README.md). */
export const EXIT = {
  OK: 0,
  API_ERROR: 1,
  USAGE: 2,
  AUTH: 3,
  NOT_FOUND: 4,
  JOB_FAILED: 5,
  LIMITED: 6,
  UNREACHABLE: 7,
  STILL_RUNNING: 8,
  INTERRUPTED: 130,
} as const;

export interface CliIO {
  stdout: Out;
  stderr: Out;
  env: NodeJS.ProcessEnv;
  /** Reads a line from the terminal (for prompts); absent when stdin is not a TTY. */
  prompt?: (question: string, hidden?: boolean) => Promise<string>;
  /** Registers a Ctrl-C handler for the duration of a wait; returns its remover. */
  onInterrupt?: (fn: () => void) => () => void;
}

const GLOBAL: FlagSpec = {
  json: { type: 'boolean' },
  'api-key': { type: 'string' },
  'base-url': { type: 'string' },
  help: { type: 'boolean', short: 'h' },
};

const HELP = `nimbus — the Nimbus command line (SDK ${SDK_VERSION})

Usage: nimbus <command> [options]

Commands
  login [--api-key KEY | --email E --password P] [--base-url URL]   save credentials
  logout                                           forget saved credentials
  whoami                                           the tenant and user of the credential
  services                                         pre-tuned services and prices
  predict <service> (--input @file.json | --input '{…}' | --text T | --image PATH)
          [--deployment ID] [--wait SECONDS] [--webhook-url URL] [--idempotency-key K]
  predictions get|cancel|wait <id>                 one prediction
  predictions list [--limit N]                     recent predictions
  datasets upload <file> [--name N] [--format csv|jsonl]
  datasets get <id>
  train --dataset ID --task TASK --target COLUMN [--name MODEL] [--automl-trials N] [--max-minutes N]
        [--algorithms a,b | --algorithm a] [--metric M] [--hardware CPU|GPU] [--text-column C]
        [--time-column C] [--horizon N] [--seed N] [--wait SECONDS]
  models                                           trained models and versions
  deployments list | get <id> | create --name N --model-version ID [--hardware CPU|GPU]
              | update <id> --model-version ID
  usage [--month [YYYY-MM] | --from ISO --to ISO]  usage table and bar chart
  bill                                             the open billing period
  invoices                                         past invoices
  webhooks [settings] | set-url <url> | clear-url | rotate-secret
           | deliveries [--job ID] [--limit N] | resend <job-id>   webhook secret, URL, attempts

Options
  --json             machine-readable output on stdout
  --api-key KEY      credential (default: NIMBUS_API_KEY, then the saved login)
  --base-url URL     API origin (default: NIMBUS_BASE_URL, then the saved login, then ${DEFAULT_BASE_URL})
  -h, --help         this help

Exit codes: 0 ok, 1 API error, 2 usage error, 3 not authenticated or not allowed, 4 not found,
5 job failed or canceled, 6 rate, quota or spend limit, 7 API unreachable, 8 still running
after --wait, 130 interrupted.
`;

interface Ctx {
  io: CliIO;
  json: boolean;
  out: Colors;
  err: Colors;
  flags: Parsed['flags'];
  positionals: string[];
  configFile: string;
  config: CliConfig;
  /** A client with the credential of --api-key, NIMBUS_API_KEY or the saved login (UNAUTHENTICATED without one). */
  client(): Nimbus;
}

type Command = { flags: FlagSpec; run: (cx: Ctx) => Promise<number> };

/** Runs the CLI; returns the exit code. */
export async function run(argv: string[], io: CliIO): Promise<number> {
  const name = argv[0] && !argv[0].startsWith('-') ? argv[0] : undefined;
  if (argv.includes('--version')) {
    io.stdout.write(`${SDK_VERSION}\n`);
    return EXIT.OK;
  }
  if (!name || name === 'help') {
    const asked = name === 'help' || argv.some((a) => a === '-h' || a === '--help');
    // `nimbus --json whoami`: options go after the command; doing nothing must not look like success.
    if (!asked && argv.length) io.stderr.write(`error: the command comes first: nimbus <command> [options] (got ${argv[0]})\n`);
    (asked ? io.stdout : io.stderr).write(HELP);
    return asked ? EXIT.OK : EXIT.USAGE;
  }
  const command = COMMANDS[name];
  const json = argv.includes('--json');
  const err = colors(io.stderr, io.env);
  try {
    if (!command) throw new UsageError(`Unknown command "${name}"`);
    const { flags, positionals } = parse(argv.slice(1), { ...GLOBAL, ...command.flags });
    if (flags.help) {
      io.stdout.write(HELP);
      return EXIT.OK;
    }
    const file = configPath(io.env);
    const config = await readConfig(file);
    const clients: Nimbus[] = [];
    const cx: Ctx = {
      io, json, flags, positionals, configFile: file, config,
      out: colors(io.stdout, io.env), err,
      client() {
        const apiKey = str(flags['api-key']) ?? io.env.NIMBUS_API_KEY ?? config.apiKey;
        if (!apiKey) {
          throw new UnauthenticatedError('Not logged in: run `nimbus login` or set NIMBUS_API_KEY', { code: 'UNAUTHENTICATED' });
        }
        const client = new Nimbus({ apiKey, baseUrl: baseUrlOf(flags, io.env, config) });
        clients.push(client);
        return client;
      },
    };
    try {
      return await command.run(cx);
    } finally {
      await Promise.all(clients.map((c) => c.close()));
    }
  } catch (e) {
    return reportError(e, io, json, err);
  }
}

function baseUrlOf(flags: Parsed['flags'], env: NodeJS.ProcessEnv, config: CliConfig): string {
  return str(flags['base-url']) ?? env.NIMBUS_BASE_URL ?? config.baseUrl ?? DEFAULT_BASE_URL;
}

export function exitCodeFor(e: unknown): number {
  if (e instanceof UsageError || e instanceof BadUserInputError) return EXIT.USAGE;
  if (e instanceof UnauthenticatedError || e instanceof ForbiddenError) return EXIT.AUTH;
  if (e instanceof NotFoundError) return EXIT.NOT_FOUND;
  if (e instanceof RateLimitedError || e instanceof QuotaExceededError || e instanceof SpendLimitReachedError
    || e instanceof PaymentRequiredError || e instanceof QueryTooCostlyError) return EXIT.LIMITED;
  if (e instanceof NetworkError || e instanceof ServiceUnavailableError) return EXIT.UNREACHABLE;
  if (e instanceof WaitTimeoutError) return EXIT.STILL_RUNNING;
  if (e instanceof Error && e.name === 'AbortError') return EXIT.INTERRUPTED;
  return EXIT.API_ERROR;
}

function reportError(e: unknown, io: CliIO, json: boolean, c: Colors): number {
  const code = exitCodeFor(e);
  if (json) {
    const body = e instanceof NimbusError
      ? { code: e.code, message: e.message, field: e.field, requestId: e.requestId, ...(e instanceof RateLimitedError ? { retryAfterSeconds: e.retryAfterSeconds } : {}) }
      : { code: e instanceof UsageError ? 'USAGE' : 'ERROR', message: e instanceof Error ? e.message : String(e) };
    io.stdout.write(`${JSON.stringify({ error: body }, null, 2)}\n`);
  } else {
    const message = e instanceof Error ? e.message : String(e);
    let line = `${c.red('Error')}: ${message}`;
    if (e instanceof NimbusError && !(e instanceof NetworkError)) line += c.dim(` [${e.code}${e.requestId ? `, request ${e.requestId}` : ''}]`);
    if (e instanceof RateLimitedError && e.retryAfterSeconds !== undefined) line += `\nRetry in ${e.retryAfterSeconds} s.`;
    if (e instanceof UsageError) line += '\nRun `nimbus --help` for usage.';
    io.stderr.write(`${line}\n`);
  }
  return code;
}

const print = (cx: Ctx, human: string, data: unknown): number => {
  cx.io.stdout.write(cx.json ? `${JSON.stringify(data, null, 2)}\n` : human);
  return EXIT.OK;
};

// ---------- commands ----------

const COMMANDS: Record<string, Command> = {
  login: {
    flags: { email: { type: 'string' }, password: { type: 'string' } },
    async run(cx) {
      const baseUrl = baseUrlOf(cx.flags, cx.io.env, cx.config);
      const email = str(cx.flags.email);
      let apiKey = str(cx.flags['api-key']);
      let credential: CliConfig['credential'] = 'apiKey';
      let user: { email: string } | null = null;
      if (email) {
        let password = str(cx.flags.password) ?? cx.io.env.NIMBUS_PASSWORD;
        if (!password && cx.io.prompt) password = await cx.io.prompt('Password: ', true);
        if (!password) throw new UsageError('--email needs --password (or NIMBUS_PASSWORD)');
        const session = await new Nimbus({ baseUrl, apiKey: '' }).auth.logIn({ email, password });
        apiKey = session.token;
        credential = 'jwt';
        user = session.user;
      } else if (!apiKey) {
        apiKey = cx.io.env.NIMBUS_API_KEY;
        if (!apiKey && cx.io.prompt) apiKey = (await cx.io.prompt('API key: ', true)).trim();
        if (!apiKey) throw new UsageError('Give --api-key KEY, or --email and --password');
      }
      const me = await new Nimbus({ baseUrl, apiKey }).me();
      await writeConfig(cx.configFile, { baseUrl, apiKey, credential, ...(user ? { email: user.email } : {}) });
      const who = me.user?.email ?? 'an API key';
      return print(cx, `Logged in to ${baseUrl} as ${who} (tenant ${me.tenant.name}). Credentials saved to ${cx.configFile}\n`,
        { baseUrl, credential, configPath: cx.configFile, tenant: me.tenant, user: me.user, role: me.role });
    },
  },

  logout: {
    flags: {},
    async run(cx) {
      const { apiKey: _k, credential: _c, email: _e, ...rest } = cx.config;
      await writeConfig(cx.configFile, rest);
      return print(cx, `Logged out; credentials removed from ${cx.configFile}\n`, { configPath: cx.configFile });
    },
  },

  whoami: {
    flags: {},
    async run(cx) {
      const nimbus = cx.client();
      const me = await nimbus.me();
      const lines = [
        `Tenant   ${me.tenant.name} (${me.tenant.slug}, ${me.tenant.id})`,
        `Plan     ${me.tenant.plan}, ${me.tenant.status}`,
        `User     ${me.user ? `${me.user.email} (${me.role})` : 'none: an API key'}`,
        `API      ${nimbus.baseUrl}`,
      ];
      return print(cx, `${lines.join('\n')}\n`, me);
    },
  },

  services: {
    flags: {},
    async run(cx) {
      const services = await cx.client().services.list();
      return print(cx, table(services, [
        { header: 'ID', value: (s) => s.id },
        { header: 'NAME', value: (s) => s.name },
        { header: 'HARDWARE', value: (s) => s.hardware },
        { header: 'PRICE', value: (s) => `${s.pricing.unitAmountCents}¢ / ${s.pricing.unit}`, align: 'right' },
      ], cx.out), services);
    },
  },

  predict: {
    flags: {
      input: { type: 'string' }, text: { type: 'string' }, image: { type: 'string' }, deployment: { type: 'string' },
      wait: { type: 'string' }, 'webhook-url': { type: 'string' }, 'idempotency-key': { type: 'string' },
    },
    async run(cx) {
      const service = cx.positionals[0];
      const deployment = str(cx.flags.deployment);
      if (!service && !deployment) throw new UsageError('predict needs a service id (e.g. `nimbus predict language.sentiment --text "…"`) or --deployment ID');
      if (service && deployment) throw new UsageError('Give a service or --deployment, not both');
      if (cx.positionals.length > 1) throw new UsageError(`Unexpected argument "${cx.positionals[1]}"`);
      const input = await buildInput(cx);
      const waitFlag = str(cx.flags.wait);
      const waitSeconds = waitFlag === undefined ? undefined : int(waitFlag, 'wait');
      const nimbus = cx.client();
      const display = new JobDisplay(cx, 'prediction');
      const abort = new AbortController();
      const stop = cx.io.onInterrupt?.(() => abort.abort(Object.assign(new Error('Interrupted'), { name: 'AbortError' })));
      let p: Prediction<unknown>;
      try {
        p = await nimbus.predict({
          ...(deployment ? { deployment } : { service: service! }), input: input as never,
          wait: waitSeconds === undefined ? true : waitSeconds,
          webhookUrl: str(cx.flags['webhook-url']), idempotencyKey: str(cx.flags['idempotency-key']),
          onProgress: display.active ? (job) => display.update(job) : undefined,
          signal: abort.signal, cancelOnAbort: true,
        } as Parameters<Nimbus['predict']>[0]);
      } catch (e) {
        display.finish(null);
        if (abort.signal.aborted) cx.io.stderr.write('Interrupted: the prediction was canceled.\n');
        throw e;
      } finally {
        stop?.();
      }
      display.finish(p);
      return finishJob(cx, p, waitSeconds !== 0, renderPrediction(p, cx.out));
    },
  },

  predictions: {
    flags: { limit: { type: 'string' } },
    async run(cx) {
      const [sub, id] = cx.positionals;
      const nimbus = cx.client();
      if (sub === 'list') {
        const limit = int(cx.flags.limit, 'limit', 1) ?? 20;
        const items = await nimbus.predictions.list({ limit, pageSize: Math.min(limit, 100) }).toArray();
        return print(cx, table(items, [
          { header: 'ID', value: (p) => p.id },
          { header: 'SERVICE', value: (p) => p.service },
          { header: 'STATUS', value: (p) => statusColor(p.status, cx.out) },
          { header: 'CREATED', value: (p) => p.createdAt },
        ], cx.out), items);
      }
      if (!id || !['get', 'cancel', 'wait'].includes(sub ?? '')) throw new UsageError('Usage: nimbus predictions get|cancel|wait <id> | list');
      if (sub === 'get') {
        const p = await nimbus.predictions.get(id);
        return print(cx, renderPrediction(p, cx.out), p);
      }
      if (sub === 'cancel') {
        const p = await nimbus.predictions.cancel(id);
        return print(cx, `Prediction ${p.id} ${statusColor(p.status, cx.out)}\n`, p);
      }
      const display = new JobDisplay(cx, 'prediction');
      const p = await nimbus.predictions.wait(id, { onProgress: display.active ? (j) => display.update(j) : undefined });
      display.finish(p);
      return finishJob(cx, p, true, renderPrediction(p, cx.out));
    },
  },

  datasets: {
    flags: { name: { type: 'string' }, format: { type: 'string' } },
    async run(cx) {
      const [sub, arg] = cx.positionals;
      const nimbus = cx.client();
      if (sub === 'upload' && arg) {
        const format = str(cx.flags.format)?.toUpperCase();
        if (format && format !== 'CSV' && format !== 'JSONL') throw new UsageError('--format is csv or jsonl');
        const r = await nimbus.datasets.upload(arg, { name: str(cx.flags.name), format: format as 'CSV' | 'JSONL' | undefined }).catch((e: unknown) => {
          const code = (e as NodeJS.ErrnoException).code;
          if (code === 'ENOENT' || code === 'EISDIR' || code === 'EACCES') throw new UsageError(`Cannot read ${arg}: ${(e as Error).message}`);
          throw e;
        });
        const cols = r.version.columns.map((col) => `${col.name}:${col.type}`).join(', ');
        return print(cx, `Dataset ${r.dataset.name} (${r.dataset.id}) version ${r.version.version}: ${r.version.rowCount} rows\nColumns: ${cols}\n`, r);
      }
      if (sub === 'get' && arg) {
        const d = await nimbus.datasets.get(arg);
        return print(cx, `Dataset ${d.name} (${d.id})\n${table(d.versions, [
          { header: 'VERSION', value: (v) => String(v.version), align: 'right' },
          { header: 'ID', value: (v) => v.id },
          { header: 'ROWS', value: (v) => String(v.rowCount), align: 'right' },
          { header: 'CREATED', value: (v) => v.createdAt },
        ], cx.out)}`, d);
      }
      throw new UsageError('Usage: nimbus datasets upload <file> [--name N] | datasets get <id>');
    },
  },

  train: {
    flags: {
      dataset: { type: 'string' }, 'dataset-version': { type: 'string' }, task: { type: 'string' }, target: { type: 'string' },
      name: { type: 'string' }, 'automl-trials': { type: 'string' }, 'max-minutes': { type: 'string' }, algorithms: { type: 'string' },
      algorithm: { type: 'string' }, metric: { type: 'string' }, hardware: { type: 'string' }, 'text-column': { type: 'string' },
      'time-column': { type: 'string' }, horizon: { type: 'string' }, seed: { type: 'string' }, wait: { type: 'string' },
      'idempotency-key': { type: 'string' },
    },
    async run(cx) {
      const datasetId = str(cx.flags.dataset);
      const datasetVersionId = str(cx.flags['dataset-version']);
      const task = str(cx.flags.task)?.toUpperCase().replace(/-/g, '_');
      const target = str(cx.flags.target);
      if ((!datasetId && !datasetVersionId) || !task || !target) {
        throw new UsageError('train needs --dataset ID (or --dataset-version ID), --task (tabular_classification, tabular_regression, text_classification, forecasting) and --target COLUMN');
      }
      if (!['TABULAR_CLASSIFICATION', 'TABULAR_REGRESSION', 'TEXT_CLASSIFICATION', 'FORECASTING'].includes(task)) throw new UsageError(`Unknown task ${task}`);
      const trials = int(cx.flags['automl-trials'], 'automl-trials', 1);
      const maxMinutes = int(cx.flags['max-minutes'], 'max-minutes', 1);
      const algorithms = str(cx.flags.algorithms)?.split(',').map((a) => a.trim()).filter(Boolean);
      const metric = str(cx.flags.metric);
      const hardware = str(cx.flags.hardware)?.toUpperCase();
      if (hardware && hardware !== 'CPU' && hardware !== 'GPU') throw new UsageError('--hardware is CPU or GPU');
      const waitSeconds = str(cx.flags.wait) === undefined ? undefined : int(cx.flags.wait, 'wait');
      const algorithm = str(cx.flags.algorithm);
      const automl = trials || maxMinutes || algorithms || metric ? { maxTrials: trials, maxMinutes, algorithms, metric } : undefined;
      if (algorithm && automl) throw new UsageError('--algorithm trains one algorithm; it excludes the AutoML options');
      const nimbus = cx.client();
      const created = await nimbus.trainings.create({
        ...(datasetVersionId ? { datasetVersionId } : { datasetId }), task: task as TrainingTask, targetColumn: target,
        modelName: str(cx.flags.name) ?? `${target}-${task.toLowerCase().replace(/_/g, '-')}`,
        hardware: hardware as 'CPU' | 'GPU' | undefined, automl, algorithm,
        textColumn: str(cx.flags['text-column']), timeColumn: str(cx.flags['time-column']),
        horizon: int(cx.flags.horizon, 'horizon', 1), seed: int(cx.flags.seed, 'seed'),
        idempotencyKey: str(cx.flags['idempotency-key']),
      });
      if (waitSeconds === 0) return print(cx, `Training job ${created.id} ${created.status}\n`, created);
      const display = new JobDisplay(cx, 'training');
      const abort = new AbortController();
      const stop = cx.io.onInterrupt?.(() => abort.abort(Object.assign(new Error('Interrupted'), { name: 'AbortError' })));
      try {
        const job = await nimbus.trainings.wait(created.id, {
          onProgress: (j) => display.update(j), signal: abort.signal, cancelOnAbort: true,
          timeoutMs: waitSeconds === undefined ? undefined : waitSeconds * 1000,
        });
        display.finish(job);
        return finishJob(cx, job, true, renderTraining(job, cx.out));
      } catch (e) {
        display.finish(null);
        if (abort.signal.aborted) cx.io.stderr.write('Interrupted: the training job was canceled.\n');
        throw e;
      } finally {
        stop?.();
      }
    },
  },

  deployments: {
    flags: { name: { type: 'string' }, 'model-version': { type: 'string' }, hardware: { type: 'string' }, limit: { type: 'string' } },
    async run(cx) {
      const [sub, id] = cx.positionals;
      const nimbus = cx.client();
      const render = (d: Awaited<ReturnType<Nimbus['deployments']['get']>>) =>
        `Deployment ${d.name} (${d.id}) ${d.status}: ${d.modelVersion.model.name} v${d.modelVersion.version} (${d.modelVersion.algorithm}) on ${d.hardware}\n`;
      const modelVersionId = str(cx.flags['model-version']);
      if (sub === 'create') {
        const name = str(cx.flags.name);
        if (!name || !modelVersionId) throw new UsageError('Usage: nimbus deployments create --name N --model-version ID [--hardware CPU|GPU]');
        const hardware = str(cx.flags.hardware)?.toUpperCase() as 'CPU' | 'GPU' | undefined;
        const d = await nimbus.deployments.create({ name, modelVersionId, hardware });
        return print(cx, render(d), d);
      }
      if (sub === 'update' && id) {
        if (!modelVersionId) throw new UsageError('Usage: nimbus deployments update <id> --model-version ID');
        const d = await nimbus.deployments.update(id, { modelVersionId });
        return print(cx, render(d), d);
      }
      if (sub === 'get' && id) {
        const d = await nimbus.deployments.get(id);
        return print(cx, render(d), d);
      }
      if (sub === 'list' || sub === undefined) {
        const items = await nimbus.deployments.list({ limit: int(cx.flags.limit, 'limit', 1) ?? 50 }).toArray();
        return print(cx, table(items, [
          { header: 'ID', value: (d) => d.id },
          { header: 'NAME', value: (d) => d.name },
          { header: 'STATUS', value: (d) => d.status },
          { header: 'MODEL', value: (d) => `${d.modelVersion.model.name} v${d.modelVersion.version}` },
          { header: 'HARDWARE', value: (d) => d.hardware },
        ], cx.out), items);
      }
      throw new UsageError('Usage: nimbus deployments list | get <id> | create --name N --model-version ID | update <id> --model-version ID');
    },
  },

  models: {
    flags: { limit: { type: 'string' } },
    async run(cx) {
      const models = await cx.client().models.list({ limit: int(cx.flags.limit, 'limit', 1) ?? 50 }).toArray();
      const rows = models.flatMap((m) => m.versions.map((v) => ({ m, v })));
      return print(cx, table(rows, [
        { header: 'MODEL', value: (r) => r.m.name },
        { header: 'TASK', value: (r) => r.m.task },
        { header: 'VERSION', value: (r) => String(r.v.version), align: 'right' },
        { header: 'VERSION ID', value: (r) => r.v.id },
        { header: 'METRICS', value: (r) => formatMetrics(r.v.metrics) },
      ], cx.out), models);
    },
  },

  usage: {
    flags: { month: { type: 'optional' }, from: { type: 'string' }, to: { type: 'string' } },
    async run(cx) {
      const { from, to, label } = usageRange(cx.flags);
      const usage = await cx.client().usage.get({ from, to });
      if (cx.json) return print(cx, '', { from, to, ...usage });
      const rows = [...usage.rows].sort((a, b) => b.seconds - a.seconds);
      let text = `Usage ${label}\n\n`;
      if (rows.length === 0) text += 'No usage in this period.\n';
      else {
        const total = { service: 'TOTAL', hardware: '', minutes: usage.totalSeconds / 60, cost: usage.total };
        text += table([...rows, total], [
          { header: 'SERVICE', value: (r) => r.service },
          { header: 'HARDWARE', value: (r) => r.hardware },
          { header: 'MINUTES', value: (r) => minutes(r.minutes), align: 'right' },
          { header: 'COST', value: (r) => money(r.cost), align: 'right' },
        ], cx.out);
        text += '\n';
        text += barChart(rows.map((r) => ({ label: `${r.service} (${r.hardware})`, value: r.minutes, text: `${minutes(r.minutes)} min` })),
          Math.max(10, Math.min(50, (cx.io.stdout.columns ?? 100) - 60)));
      }
      return print(cx, text, usage);
    },
  },

  bill: {
    flags: {},
    async run(cx) {
      const bill = await cx.client().bill.current();
      let text = `Billing period ${bill.periodStart.slice(0, 10)} – ${bill.periodEnd.slice(0, 10)}\n\n`;
      text += bill.lines.length ? table(bill.lines, [
        { header: 'DESCRIPTION', value: (l) => l.description },
        { header: 'MINUTES', value: (l) => minutes(l.minutes), align: 'right' },
        { header: 'UNIT', value: (l) => `${l.unitAmountCents}¢`, align: 'right' },
        { header: 'AMOUNT', value: (l) => money(l.amount), align: 'right' },
      ], cx.out) : 'No usage yet in this period.\n';
      text += `\nTotal        ${money(bill.total)}\nSpend limit  ${bill.spendLimit ? money(bill.spendLimit) : 'none'}\n`;
      return print(cx, text, bill);
    },
  },

  invoices: {
    flags: {},
    async run(cx) {
      const invoices = await cx.client().invoices.list();
      return print(cx, invoices.length ? table(invoices, [
        { header: 'NUMBER', value: (i) => i.number ?? i.id },
        { header: 'PERIOD', value: (i) => `${i.periodStart.slice(0, 10)} – ${i.periodEnd.slice(0, 10)}` },
        { header: 'STATUS', value: (i) => i.status ?? '—' },
        { header: 'TOTAL', value: (i) => money(i.total), align: 'right' },
        { header: 'URL', value: (i) => i.hostedInvoiceUrl ?? '' },
      ], cx.out) : 'No invoices yet.\n', invoices);
    },
  },

  webhooks: {
    flags: { job: { type: 'string' }, limit: { type: 'string' } },
    async run(cx) {
      const [sub = 'settings', arg] = cx.positionals;
      const nimbus = cx.client();
      const settings = (w: WebhookSettings) => print(cx, [
        `URL             ${w.url ?? '—'}`,
        `Signing secret  ${w.signingSecret}`,
        ...(w.previousSecretExpiresAt ? [`Old secret      still signs until ${w.previousSecretExpiresAt}`] : []),
      ].join('\n') + '\n', w);
      if (sub === 'settings') return settings(await nimbus.webhooks.settings());
      if (sub === 'set-url') {
        if (!arg) throw new UsageError('Usage: nimbus webhooks set-url <url>');
        return settings(await nimbus.webhooks.update({ url: arg }));
      }
      if (sub === 'clear-url') return settings(await nimbus.webhooks.update({ url: null }));
      if (sub === 'rotate-secret') return settings(await nimbus.webhooks.rotateSecret());
      if (sub === 'deliveries') {
        const limit = int(cx.flags.limit, 'limit', 1) ?? 20;
        const items = await nimbus.webhooks.deliveries({ jobId: str(cx.flags.job), limit, pageSize: Math.min(limit, 100) }).toArray();
        return print(cx, items.length ? table(items, [
          { header: 'WHEN', value: (d) => d.createdAt },
          { header: 'JOB', value: (d) => d.jobId },
          { header: 'EVENT', value: (d) => d.eventType },
          { header: 'ATTEMPT', value: (d) => String(d.attempt), align: 'right' },
          { header: 'RESULT', value: (d) => (d.delivered ? `${d.statusCode}` : `failed: ${d.error ?? d.statusCode ?? '?'}`) },
          { header: 'URL', value: (d) => d.url },
        ], cx.out) : 'No deliveries.\n', items);
      }
      if (sub === 'resend') {
        if (!arg) throw new UsageError('Usage: nimbus webhooks resend <job-id>');
        const r = await nimbus.webhooks.resend(arg);
        return print(cx, `Resending ${r.eventType} to ${r.url} (webhook-id ${r.webhookId})\n`, r);
      }
      throw new UsageError('Usage: nimbus webhooks [settings] | set-url <url> | clear-url | rotate-secret | deliveries [--job ID] [--limit N] | resend <job-id>');
    },
  },
};

// ---------- helpers ----------

async function buildInput(cx: Ctx): Promise<Record<string, unknown>> {
  const raw = str(cx.flags.input);
  let input: Record<string, unknown> = {};
  if (raw !== undefined) {
    let text = raw;
    if (raw.startsWith('@')) {
      try {
        text = raw === '@-' ? await readStdin() : await readFile(raw.slice(1), 'utf8');
      } catch (e) {
        throw new UsageError(`Cannot read ${raw.slice(1)}: ${(e as Error).message}`);
      }
    }
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch {
      throw new UsageError(`--input is not valid JSON${raw.startsWith('@') ? ` (${raw.slice(1)})` : ''}`);
    }
    if (!parsed || typeof parsed !== 'object' || Array.isArray(parsed)) throw new UsageError('--input must be a JSON object');
    input = parsed as Record<string, unknown>;
  }
  const text = str(cx.flags.text);
  if (text !== undefined) input.text = text;
  const image = str(cx.flags.image);
  if (image !== undefined) {
    try {
      input.image = await imageToInput(image);
    } catch (e) {
      throw new UsageError(`Cannot read image ${image}: ${(e as Error).message}`);
    }
  }
  if (raw === undefined && text === undefined && image === undefined) throw new UsageError('Give --input, --text or --image');
  return input;
}

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const c of process.stdin) chunks.push(c as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

function usageRange(flags: Parsed['flags']): { from: string; to: string; label: string } {
  const fromFlag = str(flags.from);
  const toFlag = str(flags.to);
  if (fromFlag || toFlag) {
    if (!fromFlag || !toFlag || Number.isNaN(Date.parse(fromFlag)) || Number.isNaN(Date.parse(toFlag))) {
      throw new UsageError('--from and --to are ISO dates, both required');
    }
    return { from: new Date(fromFlag).toISOString(), to: new Date(toFlag).toISOString(), label: `${fromFlag} – ${toFlag}` };
  }
  const month = typeof flags.month === 'string' ? flags.month : undefined;
  const now = new Date();
  let y = now.getUTCFullYear();
  let m = now.getUTCMonth();
  if (month) {
    const match = /^(\d{4})-(\d{2})$/.exec(month);
    if (!match || Number(match[2]) < 1 || Number(match[2]) > 12) throw new UsageError('--month is YYYY-MM');
    y = Number(match[1]);
    m = Number(match[2]) - 1;
  }
  const from = new Date(Date.UTC(y, m, 1));
  const to = new Date(Date.UTC(y, m + 1, 1));
  return { from: from.toISOString(), to: to.toISOString(), label: `${y}-${String(m + 1).padStart(2, '0')} (UTC)` };
}

/** Exit code and output of a job the command waited for. */
function finishJob(cx: Ctx, job: { status: string }, waited: boolean, human: string): number {
  cx.io.stdout.write(cx.json ? `${JSON.stringify(job, null, 2)}\n` : human);
  if (job.status === 'FAILED' || job.status === 'CANCELED') return EXIT.JOB_FAILED;
  if (waited && !isTerminal(job.status)) return EXIT.STILL_RUNNING;
  return EXIT.OK;
}

function renderPrediction(p: Prediction<unknown>, c: Colors): string {
  const parts = [`Prediction ${p.id} ${statusColor(p.status, c)}`];
  const facts = [p.service, p.usage ? `${p.usage.hardware} ${seconds(p.usage.seconds)}` : '', p.node ? `node ${p.node.id}` : ''].filter(Boolean);
  if (facts.length) parts[0] += c.dim(` (${facts.join(', ')})`);
  if (!isTerminal(p.status)) parts.push(`Progress ${progressBar(p.progress ?? 0)}  — follow it with \`nimbus predictions wait ${p.id}\``);
  if (p.error) parts.push(`${c.red(p.error.code)}: ${p.error.message}`);
  if (p.output !== null && p.output !== undefined) parts.push(JSON.stringify(p.output, null, 2));
  return `${parts.join('\n')}\n`;
}

const METRIC_ORDER = ['accuracy', 'f1Macro', 'auc', 'r2', 'rmse', 'mae', 'mape', 'smape'];
const HIGHER_IS_BETTER = new Set(['accuracy', 'f1Macro', 'auc', 'r2']);

function formatMetrics(m: Metrics | null | undefined): string {
  if (!m) return '';
  return Object.entries(m).filter(([k, v]) => typeof v === 'number' && !k.startsWith('baseline')).slice(0, 4).map(([k, v]) => `${k}=${round(v)}`).join(' ');
}
const round = (v: number) => (Math.abs(v) >= 100 ? v.toFixed(1) : v.toFixed(4));

/** The trial leaderboard: trials with metrics, best first by the task's main metric. */
export function leaderboard(job: { trials: Array<Pick<Trial, 'algorithm' | 'status' | 'metrics'>>; metric?: string }, top = 5): string[] {
  const scored = job.trials.filter((t) => t.metrics && Object.keys(t.metrics).length);
  if (!scored.length) return [];
  const keys = new Set(scored.flatMap((t) => Object.keys(t.metrics!)));
  const metric = job.metric && keys.has(job.metric) ? job.metric : METRIC_ORDER.find((k) => keys.has(k)) ?? [...keys][0]!;
  const higher = HIGHER_IS_BETTER.has(metric);
  const score = (t: (typeof scored)[number]) => {
    const v = t.metrics![metric];
    return typeof v !== 'number' || Number.isNaN(v) ? -Infinity : higher ? v : -v;
  };
  const sorted = [...scored].sort((a, b) => score(b) - score(a));
  const rows = sorted.slice(0, top).map((t, i) => ({ rank: String(i + 1), algorithm: t.algorithm, status: String(t.status), value: t.metrics![metric] }));
  return table(rows, [
    { header: '#', value: (r) => r.rank, align: 'right' },
    { header: 'ALGORITHM', value: (r) => r.algorithm },
    { header: metric.toUpperCase(), value: (r) => (r.value === undefined ? '—' : round(r.value)), align: 'right' },
    { header: 'STATUS', value: (r) => r.status },
  ]).trimEnd().split('\n');
}

function renderTraining(job: TrainingJob, c: Colors): string {
  const lines = [`Training job ${job.id} ${statusColor(job.status, c)}`];
  if (job.bestTrial) lines.push(`Best trial: ${job.bestTrial.algorithm} ${formatMetrics(job.bestTrial.metrics)}`);
  if (job.modelVersion) lines.push(`Model version ${job.modelVersion.version} (${job.modelVersion.id}) ${formatMetrics(job.modelVersion.metrics)}`);
  if (job.error) lines.push(`${c.red(job.error.code)}: ${job.error.message}`);
  const board = leaderboard(job, 10);
  if (board.length) lines.push('', ...board);
  return `${lines.join('\n')}\n`;
}

/**
 * Live progress of a job on stderr: a redrawn progress bar (and, for training, the trial
 * leaderboard) on a TTY; plain lines when status or progress changes otherwise; nothing with --json.
 */
class JobDisplay {
  readonly active: boolean;
  private readonly tty: boolean;
  private readonly live: LiveBlock | null;
  private frame = 0;
  private lastLine = '';
  private readonly started = Date.now();

  constructor(private readonly cx: Ctx, private readonly kind: 'prediction' | 'training') {
    this.active = !cx.json;
    this.tty = Boolean(cx.io.stderr.isTTY);
    this.live = this.active && this.tty ? new LiveBlock(cx.io.stderr) : null;
  }

  update(job: { id: string; status: string; progress?: number | null; trials?: Trial[]; metric?: string }): void {
    if (!this.active) return;
    const progress = job.progress ?? 0;
    if (this.live) {
      const spin = isTerminal(job.status) ? ' ' : SPINNER[this.frame++ % SPINNER.length];
      const elapsed = ((Date.now() - this.started) / 1000).toFixed(0);
      const lines = [`${spin} ${this.kind === 'training' ? 'Training' : 'Prediction'} ${job.id} ${job.status.padEnd(9)} ${progressBar(progress)}  ${elapsed}s`];
      if (job.trials) {
        const done = job.trials.filter((t) => isTerminal(String(t.status))).length;
        lines.push(`  trials ${done}/${job.trials.length} done`);
        const board = leaderboard({ trials: job.trials, metric: job.metric });
        if (board.length) lines.push('', ...board.map((l) => `  ${l}`));
      }
      this.live.update(lines);
      return;
    }
    const trials = job.trials ? ` trials ${job.trials.filter((t) => isTerminal(String(t.status))).length}/${job.trials.length}` : '';
    const line = `${job.status} ${Math.round(progress * 100)}%${trials}`;
    if (line !== this.lastLine) {
      this.lastLine = line;
      this.cx.io.stderr.write(`${this.kind} ${job.id}: ${line}\n`);
    }
  }

  finish(job: { id: string; status: string; progress?: number | null } | null): void {
    if (job && this.active) this.update(job);
    this.live?.done();
  }
}
