import type { Logger } from 'pino';
import type { EntityManager } from 'typeorm';
import type { App } from '../../app';
import type { Database } from '../../platform/db/database';
import { AppError } from '../../platform/errors';
import { ANNOUNCE_COLUMNS, type AnnounceRow } from '../compute/control-plane/announcer';
import type { ControlPlane } from '../compute/control-plane/control-plane';
import { TERMINAL, type Hardware, type JobStatus } from '../compute/compute.entities';
import type { JobsService } from '../compute/jobs.service';
import { artifactKeys, type ArtifactStore } from './artifact-store';
import {
  better, planTrial, type Hyperparameters, type Task, type TransformSpec, type TrialOutput, type TrialSpec,
} from './training.contract';

/** A training job's spec: the input of its TRAINING job row. */
export interface TrainingSpec {
  task: Task;
  modelName: string;
  datasetId: string;
  datasetVersionId: string;
  dataset: TrialSpec['dataset'];
  targetColumn: string;
  featureColumns?: string[];
  textColumn?: string;
  timeColumn?: string;
  horizon?: number;
  transforms: TransformSpec[];
  seed: number;
  metric: string;
  holdout: number;
  search: {
    mode: 'AUTOML' | 'SINGLE';
    algorithms: string[];
    maxTrials: number;
    maxMinutes: number;
    parallelTrials: number;
    /** Single-trial jobs: the given hyper-parameters (over the algorithm's defaults). */
    hyperparameters?: Hyperparameters;
  };
}

/** Orchestration state kept in the TRAINING row's output until it ends. */
interface SearchState {
  reported: number[];
  stopped: string | null;
  modelVersionId?: string;
  bestTrialId?: string;
}

interface TrialRow {
  id: string;
  status: JobStatus;
  trial: number;
  algorithm: string;
  output: TrialOutput | null;
  error: { code: string; message: string } | null;
}

export type Announce = (row: AnnounceRow, event?: string) => Promise<void>;

const MAX_LOG_LINES = 200;
const trialKey = (parentId: string, i: number) => `training:${parentId}:trial:${i}`;
const fmt = (metrics: Record<string, number> | undefined, metric: string) =>
  metrics && Number.isFinite(metrics[metric]) ? `${metric}=${metrics[metric]}` : `${metric}=n/a`;

/**
 * Drives a training job's search: submits its trials as TRIAL child jobs (through JobsService,
 * so they are admitted within the tenant's quota, checked by billing's guards and billed through
 * the ledger), records the leaderboard as trials end, stops at maxTrials or maxMinutes, then
 * registers the best trial as a model version and ends the job. Every step is idempotent (trial
 * i has a fixed idempotency key; the end is guarded by the row's status), so a hook that runs
 * twice, the API and the control plane acting at once, or a crash between steps do no harm.
 */
export class TrainingOrchestrator {
  private readonly chains = new Map<string, Promise<void>>();

  constructor(private readonly deps: { db: Database; jobs: JobsService; store: ArtifactStore; announce: Announce; log: Logger }) {}

  /** Serialised per training job within this process (the row lock serialises across processes). */
  advance(tenantId: string, parentId: string): Promise<void> {
    const prev = this.chains.get(parentId) ?? Promise.resolve();
    const next = prev.then(() => this.step(tenantId, parentId)).catch((err: Error) => {
      this.deps.log.error({ err, trainingJob: parentId }, 'training orchestration step failed; it is retried on the next tick');
    });
    this.chains.set(parentId, next);
    void next.finally(() => {
      if (this.chains.get(parentId) === next) this.chains.delete(parentId);
    });
    return next;
  }

  private async step(tenantId: string, parentId: string): Promise<void> {
    const { db, jobs } = this.deps;
    const after: { announce: Array<[AnnounceRow, string | undefined]>; cancel: string[]; deleteKeys: string[] } = { announce: [], cancel: [], deleteKeys: [] };
    await db.tenant(tenantId, async (m) => {
      const [parent] = await m.query(
        `SELECT id, status, input, output, progress, started_at, hardware FROM jobs WHERE id = $1 AND tenant_id = $2 AND kind = 'TRAINING' FOR NO KEY UPDATE`,
        [parentId, tenantId],
      );
      if (!parent) return;
      const trials: TrialRow[] = await m.query(
        `SELECT id, status, (input->>'trial')::int AS trial, input->>'algorithm' AS algorithm, output, error
           FROM jobs WHERE parent_id = $1 AND tenant_id = $2 ORDER BY (input->>'trial')::int`, [parentId, tenantId],
      );
      const active = trials.filter((t) => !TERMINAL.has(t.status));
      if (parent.status !== 'RUNNING') {
        after.cancel.push(...active.map((t) => t.id)); // the training job was cancelled: so are its trials
        return;
      }
      // Trials' inputs and outputs are the leaderboard: exempt them from job data retention.
      await m.query(`UPDATE jobs SET data_expires_at = NULL WHERE parent_id = $1 AND data_expires_at IS NOT NULL`, [parentId]);
      const spec = parent.input as TrainingSpec;
      const state: SearchState = { reported: [], stopped: null, ...(parent.output ?? {}) };
      const logs: string[] = [];
      for (const t of trials) {
        if (!TERMINAL.has(t.status) || state.reported.includes(t.trial)) continue;
        state.reported.push(t.trial);
        logs.push(t.status === 'SUCCEEDED'
          ? `trial ${t.trial} (${t.algorithm}) succeeded: ${fmt(t.output?.metrics, spec.metric)}${t.output?.resumedFromStep ? ` (resumed from checkpoint at step ${t.output.resumedFromStep})` : ''}`
          : `trial ${t.trial} (${t.algorithm}) ${t.status.toLowerCase()}: ${t.error?.message ?? 'no error recorded'}`);
      }
      const startedAt = new Date(parent.started_at).getTime();
      if (!state.stopped && Date.now() > startedAt + spec.search.maxMinutes * 60_000) {
        state.stopped = `time budget of ${spec.search.maxMinutes} min reached`;
        logs.push(`search stopped: ${state.stopped}`);
      }
      if (state.stopped) after.cancel.push(...active.map((t) => t.id));

      let next = trials.length ? Math.max(...trials.map((t) => t.trial)) + 1 : 0;
      let running = active.length;
      let submitted = 0;
      while (!state.stopped && next < spec.search.maxTrials && running < spec.search.parallelTrials) {
        try {
          await this.submitTrial(tenantId, parentId, parent.hardware, spec, next);
          logs.push(`trial ${next} submitted`);
          next++;
          running++;
          submitted++;
        } catch (err) {
          if (!(err instanceof AppError)) throw err;
          state.stopped = `${err.code}: ${err.message}`;
          logs.push(`search stopped: ${state.stopped}`);
        }
      }
      const planned = state.stopped ? Math.max(1, next) : spec.search.maxTrials;
      const done = trials.filter((t) => TERMINAL.has(t.status)).length;
      if (running === 0 && submitted === 0 && (next >= spec.search.maxTrials || state.stopped)) {
        const end = await this.finish(m, tenantId, parentId, spec, trials, state, logs);
        if (end) {
          after.announce.push([end.row, undefined]);
          after.deleteKeys.push(...end.discard);
        }
        return;
      }
      const progress = Math.min(0.99, done / planned);
      if (!logs.length && Math.abs(progress - parent.progress) < 1e-6) return; // nothing new (a timer tick)
      const [rows] = (await m.query(
        `UPDATE jobs SET output = $2::jsonb, progress = $3, logs = ${appendLogs('$4')} WHERE id = $1 RETURNING ${ANNOUNCE_COLUMNS}`,
        [parentId, JSON.stringify(state), progress, logs],
      )) as [AnnounceRow[], number];
      if (rows[0]) after.announce.push([rows[0], 'PROGRESS']);
    });
    for (const id of after.cancel) await jobs.cancel(tenantId, id, 'TRIAL').catch(() => undefined);
    for (const [row, event] of after.announce) await this.deps.announce(row, event);
    for (const key of after.deleteKeys) await this.deps.store.delete(key).catch(() => undefined);
  }

  private async submitTrial(tenantId: string, parentId: string, hardware: Hardware, spec: TrainingSpec, i: number): Promise<void> {
    const { algorithm, hyperparameters } = planTrial(spec.task, spec.search.algorithms, spec.seed, i, spec.search.hyperparameters);
    const input: TrialSpec = {
      task: spec.task, trial: i, algorithm, hyperparameters, seed: spec.seed, metric: spec.metric, tenantId, trainingJobId: parentId,
      dataset: spec.dataset, targetColumn: spec.targetColumn, featureColumns: spec.featureColumns, textColumn: spec.textColumn,
      timeColumn: spec.timeColumn, horizon: spec.horizon, transforms: spec.transforms, holdout: spec.holdout,
      artifactKey: artifactKeys.trialModel(tenantId, parentId, i), checkpointKey: artifactKeys.trialCheckpoint(tenantId, parentId, i),
    };
    await this.deps.jobs.submit(tenantId, {
      kind: 'TRIAL', parentId, service: 'training.trial', input, hardware, devices: 1, maxAttempts: 3, idempotencyKey: trialKey(parentId, i),
    });
  }

  /** Best trial → model version, and the job's end; nothing if it has already ended. */
  private async finish(m: EntityManager, tenantId: string, parentId: string, spec: TrainingSpec, trials: TrialRow[], state: SearchState, logs: string[]) {
    let best: TrialRow | undefined;
    for (const t of trials) {
      if (t.status !== 'SUCCEEDED' || !t.output) continue;
      if (!best || better(spec.metric, t.output.metrics[spec.metric], best.output!.metrics[spec.metric])) best = t;
    }
    const discard = trials.filter((t) => t.id !== best?.id && t.output?.artifactKey).map((t) => t.output!.artifactKey);
    if (!best) {
      const first = trials.find((t) => t.error)?.error;
      const error = trials.length
        ? { code: 'ALL_TRIALS_FAILED', message: `every trial failed${first ? `; the first: ${first.message}` : ''}` }
        : { code: 'NO_TRIALS', message: `no trial ran (${state.stopped ?? 'nothing to run'})` };
      logs.push(`training failed: ${error.message}`);
      const [rows] = (await m.query(
        `UPDATE jobs SET status = 'FAILED', error = $2::jsonb, completed_at = now(), output = $3::jsonb, logs = ${appendLogs('$4')}
          WHERE id = $1 AND status = 'RUNNING' RETURNING ${ANNOUNCE_COLUMNS}`,
        [parentId, JSON.stringify(error), JSON.stringify(state), logs],
      )) as [AnnounceRow[], number];
      return rows[0] ? { row: rows[0], discard } : null;
    }
    const out = best.output!;
    const [model] = await m.query(
      `INSERT INTO models (tenant_id, name, task) VALUES ($1, $2, $3)
       ON CONFLICT (tenant_id, name) DO UPDATE SET name = EXCLUDED.name RETURNING id, task`,
      [tenantId, spec.modelName, spec.task],
    );
    if (model.task !== spec.task) {
      const error = { code: 'MODEL_TASK_MISMATCH', message: `model "${spec.modelName}" is a ${model.task} model, not ${spec.task}` };
      const [rows] = (await m.query(
        `UPDATE jobs SET status = 'FAILED', error = $2::jsonb, completed_at = now() WHERE id = $1 AND status = 'RUNNING' RETURNING ${ANNOUNCE_COLUMNS}`,
        [parentId, JSON.stringify(error)],
      )) as [AnnounceRow[], number];
      return rows[0] ? { row: rows[0], discard: [...discard, out.artifactKey] } : null;
    }
    await m.query(`SELECT id FROM models WHERE id = $1 FOR UPDATE`, [model.id]);
    await m.query(
      `INSERT INTO model_versions (model_id, tenant_id, version, algorithm, metrics, hyperparameters, artifact_key, dataset_version_id,
                                   transforms, feature_schema, training_job_id)
       SELECT $1, $2, COALESCE(max(version), 0) + 1, $3, $4::jsonb, $5::jsonb, $6, $7, $8::jsonb, $9::jsonb, $10 FROM model_versions WHERE model_id = $1
       ON CONFLICT (training_job_id) DO NOTHING`,
      [model.id, tenantId, out.algorithm, JSON.stringify(out.metrics), JSON.stringify(out.hyperparameters), out.artifactKey,
        spec.datasetVersionId, JSON.stringify(spec.transforms), JSON.stringify(out.featureSchema), parentId],
    );
    const [version] = await m.query(`SELECT id, version FROM model_versions WHERE training_job_id = $1`, [parentId]);
    logs.push(`best: trial ${best.trial} (${best.algorithm}) ${fmt(out.metrics, spec.metric)}; registered ${spec.modelName} version ${version.version}`);
    const [rows] = (await m.query(
      `UPDATE jobs SET status = 'SUCCEEDED', completed_at = now(), progress = 1, output = $2::jsonb, logs = ${appendLogs('$3')}
        WHERE id = $1 AND status = 'RUNNING' RETURNING ${ANNOUNCE_COLUMNS}`,
      [parentId, JSON.stringify({ ...state, modelVersionId: version.id, bestTrialId: best.id }), logs],
    )) as [AnnounceRow[], number];
    return rows[0] ? { row: rows[0], discard } : null;
  }
}

/** logs || new lines, keeping the last MAX_LOG_LINES (as the recorder does for job logs). */
const appendLogs = (param: string) => `(SELECT COALESCE(array_agg(l ORDER BY n), '{}') FROM (
  SELECT l, n FROM unnest(logs || ${param}::text[]) WITH ORDINALITY AS t(l, n) ORDER BY n DESC LIMIT ${MAX_LOG_LINES}) s)`;

/**
 * Runs training orchestration in a control plane: after every TRIAL (or cancelled TRAINING) job's
 * terminal state, and on a timer for time budgets and anything a crash left behind. The API's
 * services do the database work (as the tenant, under row-level security); the control plane's
 * announcer publishes the training job's updates (subscriptions, webhooks).
 */
export function attachTraining(cp: ControlPlane, app: Pick<App, 'db' | 'log' | 'services'>, opts: { tickMs?: number } = {}): { stop(): Promise<void> } {
  const orchestrator = new TrainingOrchestrator({
    db: app.db, jobs: app.services.jobs, store: app.services.training.store, log: app.log.child({ name: 'training' }),
    announce: (row, event) => cp.announcer.announce(row, event),
  });
  cp.announcer.onTerminal(async (row) => {
    // Not awaited: the recorder's loop must not wait for orchestration (nor for its own announcements).
    if (row.kind === 'TRIAL' && row.parent_id) void orchestrator.advance(row.tenant_id, row.parent_id);
    else if (row.kind === 'TRAINING') void orchestrator.advance(row.tenant_id, row.id);
  });
  let busy = false;
  let stopped = false;
  const timer = setInterval(async () => {
    if (busy || stopped) return;
    busy = true;
    try {
      const rows: Array<{ id: string; tenant_id: string }> = await cp.cx.db.query(
        `SELECT id, tenant_id FROM jobs WHERE kind = 'TRAINING' AND status = 'RUNNING' ORDER BY created_at LIMIT 500`,
      );
      for (const r of rows) if (!stopped) await orchestrator.advance(r.tenant_id, r.id);
    } catch (err) {
      if (!stopped) app.log.warn({ err: (err as Error).message }, 'training tick failed');
    } finally {
      busy = false;
    }
  }, opts.tickMs ?? 2000);
  timer.unref();
  return {
    async stop() {
      stopped = true;
      clearInterval(timer);
      while (busy) await new Promise((r) => setTimeout(r, 20));
    },
  };
}
