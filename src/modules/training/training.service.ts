import { randomInt, randomUUID } from 'node:crypto';
import type { Redis } from 'ioredis';
import type { Logger } from 'pino';
import { z } from 'zod';
import type { Database } from '../../platform/db/database';
import { badInput, notFound } from '../../platform/errors';
import type { keys } from '../../platform/queue/messages';
import { isUuid } from '../../platform/uuid';
import { parseInput, requireHttpsWebhook, webhookUrlSchema } from '../../platform/validation';
import type { Hardware, JobStatus } from '../compute/compute.entities';
import type { JobsService, NewJob } from '../compute/jobs.service';
import { idempotencyConflict, trainingFingerprint } from '../compute/request-fingerprint';
import { requireScope } from '../tenancy/principal';
import type { Caller } from '../tenancy/tenancy.service';
import type { ArtifactStore } from './artifact-store';
import type { DatasetsService, DatasetVersionView } from './datasets.service';
import { imputeConstant } from './dataset-parser';
import {
  ALGORITHMS, TASKS, TASK_METRICS, algorithmsFor, checkHyperparameters, defaultMetric, transformSchema, type ColumnProfile, type ColumnType,
  type Hyperparameters, type Task, type TransformSpec,
} from './training.contract';
import { TrainingOrchestrator, type TrainingSpec } from './training.orchestrator';

const createSchema = z.strictObject({
  datasetVersionId: z.string().min(1).optional(),
  datasetId: z.string().min(1).optional(),
  modelName: z.string().trim().min(1).max(200),
  task: z.enum(TASKS),
  targetColumn: z.string().min(1),
  featureColumns: z.array(z.string().min(1)).min(1).max(500).optional(),
  textColumn: z.string().min(1).optional(),
  timeColumn: z.string().min(1).optional(),
  horizon: z.number().int().min(1).max(365).optional(),
  transforms: z.array(transformSchema).max(100).optional(),
  hardware: z.enum(['CPU', 'GPU']).default('CPU'),
  seed: z.number().int().min(0).max(2 ** 31 - 1).optional(),
  holdout: z.number().min(0.05).max(0.5).optional(),
  automl: z.strictObject({
    maxTrials: z.number().int().min(1).max(100).optional(),
    maxMinutes: z.number().int().min(1).max(24 * 60).optional(),
    algorithms: z.array(z.string().min(1)).min(1).max(20).optional(),
    metric: z.string().min(1).optional(),
    parallelTrials: z.number().int().min(1).max(32).optional(),
  }).optional(),
  algorithm: z.string().min(1).optional(),
  hyperparameters: z.record(z.string(), z.unknown()).optional(),
  idempotencyKey: z.string().min(1).max(255).optional(),
  webhookUrl: webhookUrlSchema.optional(),
  // A training job is RUNNING from its creation: there is no STARTED event to send.
  webhookEvents: z.array(z.enum(['PROGRESS'], 'training jobs send PROGRESS (terminal events are always sent)')).optional(),
}).superRefine((v, ctx) => {
  if ((v.datasetVersionId === undefined) === (v.datasetId === undefined)) {
    ctx.addIssue({ code: 'custom', path: ['datasetVersionId'], message: 'give exactly one of datasetVersionId or datasetId' });
  }
  if (v.automl && v.algorithm) ctx.addIssue({ code: 'custom', path: ['algorithm'], message: 'give either automl or algorithm, not both' });
  if (v.hyperparameters && !v.algorithm) ctx.addIssue({ code: 'custom', path: ['hyperparameters'], message: 'hyperparameters need an algorithm' });
});

export interface TrainingJobView {
  id: string;
  status: JobStatus;
  progress: number;
  logs: string[];
  modelName: string;
  task: Task;
  metric: string;
  hardware: Hardware;
  createdAt: Date;
  startedAt: Date | null;
  completedAt: Date | null;
  usage: { seconds: number; hardware: Hardware };
  error: { code: string; message: string } | null;
  bestTrialId: string | null;
  modelVersionId: string | null;
}

export interface TrialView {
  id: string;
  trial: number;
  algorithm: string;
  hyperparameters: Hyperparameters;
  status: JobStatus;
  progress: number;
  attempt: number;
  metrics: Record<string, number> | null;
  logs: string[];
  error: { code: string; message: string } | null;
  startedAt: Date | null;
  completedAt: Date | null;
}

const NUMERIC: ReadonlySet<ColumnType> = new Set(['number', 'integer']);
const MAX_CLASSES = 100;

/** Training jobs: validation, creation (the parent row and its first trials), reading, cancelling. */
export class TrainingService {
  readonly orchestrator: TrainingOrchestrator;

  constructor(
    private readonly db: Database,
    readonly store: ArtifactStore,
    private readonly jobs: JobsService,
    private readonly datasets: DatasetsService,
    redis: Redis,
    k: ReturnType<typeof keys>,
    log: Logger,
    private readonly opts: { allowPlainHttpWebhooks: boolean } = { allowPlainHttpWebhooks: false },
  ) {
    // In the API the orchestrator only submits a job's first trials; updates go out on the job's update channel.
    this.orchestrator = new TrainingOrchestrator({
      db, jobs, store, log,
      announce: async (row) => {
        await redis.publish(k.jobUpdates(row.id), JSON.stringify({ jobId: row.id, tenantId: row.tenant_id, status: row.status, progress: row.progress }));
      },
    });
  }

  async createTrainingJob(caller: Caller, raw: unknown): Promise<TrainingJobView> {
    const p = requireScope(caller.principal, 'TRAIN');
    const input = parseInput(createSchema, stripNulls(raw));
    requireHttpsWebhook('input.webhookUrl', input.webhookUrl, this.opts.allowPlainHttpWebhooks);
    // A key reused with another request (another kind of job, or another fingerprint) is a CONFLICT.
    const requestHash = input.idempotencyKey ? trainingFingerprint(input) : null;
    const refuseUnlessSame = (other: { kind: string; request_hash: string | null }) => {
      const conflict = idempotencyConflict(other.kind === 'TRAINING', other.request_hash, requestHash);
      if (conflict) throw conflict;
    };
    if (input.idempotencyKey) {
      const [existing] = await this.db.tenant(p.tenantId, (m) =>
        m.query(`SELECT id, kind, request_hash FROM jobs WHERE tenant_id = $1 AND idempotency_key = $2`, [p.tenantId, input.idempotencyKey]),
      );
      if (existing) {
        refuseUnlessSame(existing);
        return this.read(p.tenantId, existing.id);
      }
    }
    const version = await this.datasets.versionForTraining(p.tenantId, input);
    const spec = await this.buildSpec(p.tenantId, input, version);
    const job: NewJob = { kind: 'TRAINING', service: 'training', input: spec, hardware: input.hardware, devices: 1, idempotencyKey: input.idempotencyKey, requestHash };
    for (const guard of this.jobs.guards) await guard(p.tenantId, job);
    const id = randomUUID();
    const created = await this.db.tenant(p.tenantId, async (m) => {
      // The parent never runs on a node: it is RUNNING from the start and orchestrated by the control plane.
      const rows = await m.query(
        `INSERT INTO jobs (id, tenant_id, kind, service, status, hardware, devices, input, idempotency_key, max_attempts, started_at, webhook_url, webhook_events,
                           request_hash)
         VALUES ($1, $2, 'TRAINING', 'training', 'RUNNING', $3, 1, $4::jsonb, $5, 1, now(), $6, $7, $8)
         ON CONFLICT (tenant_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING RETURNING id`,
        [id, p.tenantId, input.hardware, JSON.stringify(spec), input.idempotencyKey ?? null, input.webhookUrl ?? null, input.webhookEvents ?? [], requestHash],
      );
      if (rows[0]) return rows[0].id as string;
      const [other] = await m.query(`SELECT id, kind, request_hash FROM jobs WHERE tenant_id = $1 AND idempotency_key = $2`, [p.tenantId, input.idempotencyKey]);
      refuseUnlessSame(other);
      return other.id as string;
    });
    await this.orchestrator.advance(p.tenantId, created);
    return this.read(p.tenantId, created);
  }

  private async buildSpec(tenantId: string, input: z.infer<typeof createSchema>, version: DatasetVersionView): Promise<TrainingSpec> {
    const cols = new Map(version.columns.map((c) => [c.name, c]));
    const names = version.columns.map((c) => c.name).join(', ');
    const column = (field: string, name: string): ColumnProfile => {
      const c = cols.get(name);
      if (!c) throw badInput(field, `column "${name}" is not in dataset version ${version.version} (columns: ${names})`);
      return c;
    };
    const task = input.task;
    const target = column('input.targetColumn', input.targetColumn);
    if (task === 'TABULAR_REGRESSION' || task === 'FORECASTING') {
      if (!NUMERIC.has(target.type)) throw badInput('input.targetColumn', `column "${target.name}" is ${target.type}; ${task} needs a numeric target`);
    } else {
      if (target.type === 'number') throw badInput('input.targetColumn', `column "${target.name}" is a continuous number; use TABULAR_REGRESSION, or a categorical target for ${task}`);
      if (target.type === 'text') throw badInput('input.targetColumn', `column "${target.name}" is free text; a classification target must be a category, boolean or integer column`);
      if (target.distinctCount < 2) throw badInput('input.targetColumn', `column "${target.name}" has fewer than two classes`);
      if (target.distinctCount > MAX_CLASSES) throw badInput('input.targetColumn', `column "${target.name}" has ${target.distinctCount} distinct values; at most ${MAX_CLASSES} classes`);
    }
    if (task === 'TEXT_CLASSIFICATION') {
      if (!input.textColumn) throw badInput('input.textColumn', 'is required for TEXT_CLASSIFICATION');
      const t = column('input.textColumn', input.textColumn);
      if (t.type !== 'text' && t.type !== 'category') throw badInput('input.textColumn', `column "${t.name}" is ${t.type}, not text`);
    }
    if (task === 'FORECASTING') {
      if (!input.timeColumn) throw badInput('input.timeColumn', 'is required for FORECASTING');
      const t = column('input.timeColumn', input.timeColumn);
      if (t.type !== 'datetime' && t.type !== 'integer') throw badInput('input.timeColumn', `column "${t.name}" is ${t.type}; a time column is a datetime or integer column`);
      if (!input.horizon) throw badInput('input.horizon', 'is required for FORECASTING');
      if (version.rowCount < 2 * input.horizon + 8) throw badInput('input.horizon', `${input.horizon} is too long for ${version.rowCount} points (needs at least 2 × horizon + 8 points)`);
    } else if (version.rowCount < 10) {
      throw badInput('input.datasetVersionId', `the dataset version has ${version.rowCount} rows; training needs at least 10`);
    }
    input.featureColumns?.forEach((f, i) => {
      column(`input.featureColumns[${i}]`, f);
      if (f === input.targetColumn) throw badInput(`input.featureColumns[${i}]`, 'the target column cannot be a feature');
    });
    const transforms: TransformSpec[] = input.transforms ?? [];
    transforms.forEach((t, i) => t.columns.forEach((name, j) => {
      const c = column(`input.transforms[${i}].columns[${j}]`, name);
      const problem = transformProblem(t, c.type);
      if (problem) throw badInput(`input.transforms[${i}].columns[${j}]`, problem);
    }));

    const algorithms = input.algorithm ? [input.algorithm] : input.automl?.algorithms ?? algorithmsFor(task);
    algorithms.forEach((a, i) => {
      if (!ALGORITHMS[task][a]) {
        throw badInput(input.algorithm ? 'input.algorithm' : `input.automl.algorithms[${i}]`, `unknown algorithm "${a}" for ${task}; one of ${algorithmsFor(task).join(', ')}`);
      }
    });
    if (new Set(algorithms).size !== algorithms.length) throw badInput('input.automl.algorithms', 'lists an algorithm twice');
    if (input.hyperparameters) {
      const problem = checkHyperparameters(task, input.algorithm!, input.hyperparameters);
      if (problem) throw badInput(`input.hyperparameters.${problem.split(':')[0]}`, problem.slice(problem.indexOf(':') + 1).trim());
    }
    const metric = input.automl?.metric ?? defaultMetric(task);
    if (!TASK_METRICS[task].includes(metric)) throw badInput('input.automl.metric', `must be one of ${TASK_METRICS[task].join(', ')} for ${task}`);
    if (metric === 'auc' && target.distinctCount !== 2) throw badInput('input.automl.metric', 'auc needs a binary target');

    const [model] = await this.db.tenant(tenantId, (m) => m.query(`SELECT task FROM models WHERE tenant_id = $1 AND name = $2`, [tenantId, input.modelName]));
    if (model && model.task !== task) throw badInput('input.modelName', `model "${input.modelName}" is a ${model.task} model; choose another name`);

    const maxTrials = input.algorithm ? 1 : input.automl?.maxTrials ?? 2 * algorithms.length;
    return {
      task, modelName: input.modelName, datasetId: version.datasetId, datasetVersionId: version.id,
      dataset: { versionId: version.id, storageKey: version.storageKey, format: version.format, columns: version.columns.map((c) => ({ name: c.name, type: c.type })) },
      targetColumn: input.targetColumn, featureColumns: input.featureColumns, textColumn: input.textColumn, timeColumn: input.timeColumn,
      horizon: input.horizon, transforms, seed: input.seed ?? randomInt(2 ** 31 - 1), metric, holdout: input.holdout ?? 0.2,
      search: {
        mode: input.algorithm ? 'SINGLE' : 'AUTOML', algorithms, maxTrials, maxMinutes: input.automl?.maxMinutes ?? 60,
        parallelTrials: Math.min(maxTrials, input.automl?.parallelTrials ?? 4),
        ...(input.hyperparameters ? { hyperparameters: input.hyperparameters as Hyperparameters } : {}),
      },
    };
  }

  async trainingJob(caller: Caller, id: string): Promise<TrainingJobView> {
    const p = requireScope(caller.principal, 'READ');
    return this.read(p.tenantId, id);
  }

  async read(tenantId: string, id: string): Promise<TrainingJobView> {
    if (!isUuid(id)) throw notFound('Training job');
    const [r] = await this.db.tenant(tenantId, (m) =>
      m.query(
        `SELECT j.id, j.status, j.progress, j.logs, j.input->>'modelName' AS model_name, j.input->>'task' AS task, j.input->>'metric' AS metric,
                j.hardware, j.created_at, j.started_at, j.completed_at, j.error, j.output,
                COALESCE((SELECT sum(u.billable_ms) FROM usage_ledger u JOIN jobs c ON c.id = u.job_id
                           WHERE c.parent_id = j.id AND c.tenant_id = j.tenant_id AND u.billable), 0)::bigint AS billable_ms
           FROM jobs j WHERE j.id = $1 AND j.tenant_id = $2 AND j.kind = 'TRAINING'`, [id, tenantId]),
    );
    if (!r) throw notFound('Training job');
    return {
      id: r.id, status: r.status, progress: r.progress, logs: r.logs, modelName: r.model_name, task: r.task, metric: r.metric, hardware: r.hardware,
      createdAt: r.created_at, startedAt: r.started_at, completedAt: r.completed_at, error: r.error,
      usage: { seconds: Number(r.billable_ms) / 1000, hardware: r.hardware },
      bestTrialId: r.output?.bestTrialId ?? null, modelVersionId: r.output?.modelVersionId ?? null,
    };
  }

  async trials(caller: Caller, trainingJobId: string): Promise<TrialView[]> {
    const p = requireScope(caller.principal, 'READ');
    const rows = await this.db.tenant(p.tenantId, (m) =>
      m.query(
        `SELECT id, status, progress, attempt, logs, error, started_at, completed_at, (input->>'trial')::int AS trial, input->>'algorithm' AS algorithm,
                COALESCE(output->'hyperparameters', input->'hyperparameters') AS hyperparameters, output->'metrics' AS metrics
           FROM jobs WHERE parent_id = $1 AND tenant_id = $2 AND kind = 'TRIAL' ORDER BY (input->>'trial')::int`, [trainingJobId, p.tenantId]),
    );
    return rows.map((r: any) => ({
      id: r.id, trial: r.trial, algorithm: r.algorithm, hyperparameters: r.hyperparameters ?? {}, status: r.status, progress: r.progress,
      attempt: r.attempt, metrics: r.metrics ?? null, logs: r.logs, error: r.error, startedAt: r.started_at, completedAt: r.completed_at,
    }));
  }

  /** Cancels the training job and every trial that has not ended (the control plane's hook does it too). */
  async cancelTrainingJob(caller: Caller, id: string): Promise<TrainingJobView> {
    const p = requireScope(caller.principal, 'TRAIN');
    await this.read(p.tenantId, id);
    await this.jobs.cancel(p.tenantId, id, 'TRAINING');
    const active: Array<{ id: string }> = await this.db.tenant(p.tenantId, (m) =>
      m.query(`SELECT id FROM jobs WHERE parent_id = $1 AND tenant_id = $2 AND status IN ('QUEUED','ADMITTED','RUNNING')`, [id, p.tenantId]),
    );
    for (const t of active) await this.jobs.cancel(p.tenantId, t.id, 'TRIAL');
    return this.read(p.tenantId, id);
  }

  async *updates(caller: Caller, id: string, signal?: AbortSignal): AsyncGenerator<TrainingJobView> {
    const p = requireScope(caller.principal, 'READ');
    // jobs.updates ends after the terminal state; each update is re-read with the usage of its trials.
    for await (const j of this.jobs.updates(caller, id, 'TRAINING', signal)) {
      yield await this.read(p.tenantId, j.id);
    }
  }
}

function transformProblem(t: TransformSpec, type: ColumnType): string | null {
  switch (t.type) {
    case 'IMPUTE':
      if ((t.strategy === 'MEAN' || t.strategy === 'MEDIAN') && !NUMERIC.has(type) && type !== 'datetime') return `${t.strategy} imputation needs a numeric column, not ${type}`;
      return t.strategy === 'CONSTANT' ? constantProblem(t.value, type) : null;
    case 'STANDARDIZE':
      return NUMERIC.has(type) || type === 'boolean' || type === 'datetime' ? null : `cannot standardise a ${type} column`;
    case 'DATE_PARTS':
      return type === 'datetime' ? null : `date parts need a datetime column, not ${type}`;
    case 'TFIDF':
      return type === 'text' || type === 'category' ? null : `TF-IDF needs a text column, not ${type}`;
    case 'ONE_HOT':
      return type === 'text' ? 'one-hot of free text would explode; use TFIDF' : type === 'number' ? 'one-hot needs a categorical column, not a continuous number' : null;
    default:
      return null;
  }
}

/**
 * Whether an IMPUTE constant is a value of its column's type, by the rule the runtime fills with
 * (imputeConstant): numbers for number/integer columns, true/false (booleans, the strings in any
 * case, or 1/0) for boolean ones, a date string for datetime ones; category and text columns take
 * any constant as a string.
 */
function constantProblem(value: unknown, type: ColumnType): string | null {
  if (!NUMERIC.has(type) && type !== 'boolean' && type !== 'datetime') return null;
  if (imputeConstant(value, type) !== null) return null;
  const shown = JSON.stringify(value);
  if (NUMERIC.has(type)) return `a numeric column needs a numeric constant, not ${shown}`;
  if (type === 'boolean') return `a boolean column needs true or false (or 1/0) as its constant, not ${shown}`;
  return `a datetime column needs a date string (such as 2024-01-31) as its constant, not ${shown}`;
}

/** GraphQL passes explicit nulls for absent optional fields: treat them as absent (nested too). */
function stripNulls(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(stripNulls);
  if (!v || typeof v !== 'object') return v;
  return Object.fromEntries(Object.entries(v).filter(([, x]) => x !== null && x !== undefined).map(([k, x]) => [k, k === 'hyperparameters' ? x : stripNulls(x)]));
}
