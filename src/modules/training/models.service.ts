import type { EntityManager } from 'typeorm';
import { z } from 'zod';
import type { Database } from '../../platform/db/database';
import { badInput, conflict, notFound } from '../../platform/errors';
import { keysetWhere, paginate, type PageArgs } from '../../platform/pagination';
import { isUuid } from '../../platform/uuid';
import { parseInput } from '../../platform/validation';
import type { Hardware } from '../compute/compute.entities';
import type { ResolvedTarget } from '../compute/jobs.service';
import { requireScope, type Principal } from '../tenancy/principal';
import { isUniqueViolation, type Caller } from '../tenancy/tenancy.service';
import { MAX_PREDICT_ROWS, type FeatureSchema, type ModelPredictInput, type Task } from './training.contract';

export interface ModelVersionView {
  id: string;
  modelId: string;
  modelName: string;
  task: Task;
  version: number;
  algorithm: string;
  metrics: Record<string, number>;
  hyperparameters: Record<string, unknown>;
  transforms: unknown[];
  featureSchema: FeatureSchema;
  artifactKey: string;
  datasetVersionId: string | null;
  trainingJobId: string | null;
  createdAt: Date;
}

export interface DeploymentView {
  id: string;
  name: string;
  status: string;
  hardware: Hardware;
  modelVersionId: string;
  createdAt: Date;
  updatedAt: Date;
}

const VERSION_SELECT = `SELECT v.*, m.name AS model_name, m.task FROM model_versions v JOIN models m ON m.id = v.model_id`;
const toVersion = (r: any): ModelVersionView => ({
  id: r.id, modelId: r.model_id, modelName: r.model_name, task: r.task, version: r.version, algorithm: r.algorithm, metrics: r.metrics,
  hyperparameters: r.hyperparameters, transforms: r.transforms, featureSchema: r.feature_schema, artifactKey: r.artifact_key,
  datasetVersionId: r.dataset_version_id, trainingJobId: r.training_job_id, createdAt: r.created_at,
});
const toDeployment = (r: any): DeploymentView => ({
  id: r.id, name: r.name, status: r.status, hardware: r.hardware, modelVersionId: r.model_version_id, createdAt: r.created_at, updatedAt: r.updated_at,
});

const deploymentSchema = z.strictObject({
  name: z.string().trim().min(1).max(200).regex(/^[\w.-]+$/, 'letters, digits, "_", "-" and "." only'),
  modelVersionId: z.string().min(1),
  hardware: z.enum(['CPU', 'GPU']).default('CPU'),
});

/** The model registry (a model per name, a version per successful training job) and deployments. */
export class ModelsService {
  constructor(private readonly db: Database) {}

  async models(caller: Caller, args: PageArgs) {
    const p = requireScope(caller.principal, 'READ');
    return this.db.tenant(p.tenantId, (m) =>
      paginate(args, async (after, limit) => {
        const where = keysetWhere(after, 2, 'models');
        const rows = await m.query(
          `SELECT id, name, task, created_at FROM models WHERE tenant_id = $1 AND ${where.sql} ORDER BY created_at DESC, id DESC LIMIT ${limit}`,
          [p.tenantId, ...where.params],
        );
        const versions: ModelVersionView[] = rows.length
          ? (await m.query(`${VERSION_SELECT} WHERE v.model_id = ANY($1::uuid[]) ORDER BY v.version DESC`, [rows.map((r: any) => r.id)])).map(toVersion)
          : [];
        return rows.map((r: any) => ({ id: r.id, name: r.name, task: r.task, createdAt: r.created_at, versions: versions.filter((v) => v.modelId === r.id) }));
      }),
    );
  }

  async model(caller: Caller, id: string) {
    const p = requireScope(caller.principal, 'READ');
    if (!isUuid(id)) throw notFound('Model');
    return this.db.tenant(p.tenantId, async (m) => {
      const [r] = await m.query(`SELECT id, name, task, created_at FROM models WHERE id = $1 AND tenant_id = $2`, [id, p.tenantId]);
      if (!r) throw notFound('Model');
      const versions = (await m.query(`${VERSION_SELECT} WHERE v.model_id = $1 ORDER BY v.version DESC`, [id])).map(toVersion);
      return { id: r.id, name: r.name, task: r.task, createdAt: r.created_at, versions };
    });
  }

  async modelVersion(caller: Caller, id: string): Promise<ModelVersionView> {
    const p = requireScope(caller.principal, 'READ');
    return this.db.tenant(p.tenantId, (m) => this.versionIn(m, p.tenantId, id));
  }

  async versionOfTrainingJob(caller: Caller, trainingJobId: string): Promise<ModelVersionView | null> {
    const p = requireScope(caller.principal, 'READ');
    const [r] = await this.db.tenant(p.tenantId, (m) => m.query(`${VERSION_SELECT} WHERE v.training_job_id = $1 AND v.tenant_id = $2`, [trainingJobId, p.tenantId]));
    return r ? toVersion(r) : null;
  }

  private async versionIn(m: EntityManager, tenantId: string, id: string): Promise<ModelVersionView> {
    if (!isUuid(id)) throw notFound('Model version');
    const [r] = await m.query(`${VERSION_SELECT} WHERE v.id = $1 AND v.tenant_id = $2`, [id, tenantId]);
    if (!r) throw notFound('Model version');
    return toVersion(r);
  }

  async createDeployment(caller: Caller, raw: unknown): Promise<DeploymentView> {
    const p = requireScope(caller.principal, 'TRAIN');
    const input = parseInput(deploymentSchema, stripNulls(raw));
    return this.db.tenant(p.tenantId, async (m) => {
      await this.versionIn(m, p.tenantId, input.modelVersionId);
      try {
        const [r] = await m.query(
          `INSERT INTO deployments (tenant_id, name, model_version_id, hardware) VALUES ($1, $2, $3, $4) RETURNING *`,
          [p.tenantId, input.name, input.modelVersionId, input.hardware],
        );
        return toDeployment(r);
      } catch (err) {
        if (isUniqueViolation(err)) throw conflict(`A deployment named "${input.name}" already exists`);
        throw err;
      }
    });
  }

  /**
   * Points a deployment at another version of the same model (roll forward or back). Each
   * prediction job carries the version it resolved to, so one in flight finishes on the old one.
   */
  async updateDeployment(caller: Caller, id: string, modelVersionId: string): Promise<DeploymentView> {
    const p = requireScope(caller.principal, 'TRAIN');
    if (!isUuid(id)) throw notFound('Deployment');
    return this.db.tenant(p.tenantId, async (m) => {
      const [d] = await m.query(
        `SELECT d.*, v.model_id FROM deployments d JOIN model_versions v ON v.id = d.model_version_id WHERE d.id = $1 AND d.tenant_id = $2 FOR UPDATE OF d`,
        [id, p.tenantId],
      );
      if (!d) throw notFound('Deployment');
      const target = await this.versionIn(m, p.tenantId, modelVersionId);
      if (target.modelId !== d.model_id) throw badInput('modelVersionId', `version ${target.version} belongs to model "${target.modelName}", not to this deployment's model`);
      const [[r]] = await m.query(`UPDATE deployments SET model_version_id = $2, updated_at = now() WHERE id = $1 RETURNING *`, [id, modelVersionId]);
      return toDeployment(r);
    });
  }

  async deployment(caller: Caller, id: string): Promise<DeploymentView> {
    const p = requireScope(caller.principal, 'READ');
    if (!isUuid(id)) throw notFound('Deployment');
    const [r] = await this.db.tenant(p.tenantId, (m) => m.query(`SELECT * FROM deployments WHERE id = $1 AND tenant_id = $2`, [id, p.tenantId]));
    if (!r) throw notFound('Deployment');
    return toDeployment(r);
  }

  async deployments(caller: Caller, args: PageArgs) {
    const p = requireScope(caller.principal, 'READ');
    return this.db.tenant(p.tenantId, (m) =>
      paginate(args, async (after, limit) => {
        const where = keysetWhere(after, 2, 'deployments');
        const rows = await m.query(
          `SELECT * FROM deployments WHERE tenant_id = $1 AND ${where.sql} ORDER BY created_at DESC, id DESC LIMIT ${limit}`, [p.tenantId, ...where.params],
        );
        return rows.map(toDeployment);
      }),
    );
  }

  /**
   * predict(deployment:): the deployment's current version, the input checked against its feature
   * schema (BAD_USER_INPUT naming input.rows[i].<feature>), as a model.predict job.
   */
  async resolveDeployment(p: Principal, deploymentId: string, input: unknown): Promise<ResolvedTarget> {
    if (!isUuid(deploymentId)) throw notFound('Deployment');
    const [r] = await this.db.tenant(p.tenantId, (m) =>
      m.query(`SELECT d.hardware, v.id, v.version, v.artifact_key, v.feature_schema, mo.task FROM deployments d
                 JOIN model_versions v ON v.id = d.model_version_id JOIN models mo ON mo.id = v.model_id
                WHERE d.id = $1 AND d.tenant_id = $2`, [deploymentId, p.tenantId]),
    );
    if (!r) throw notFound('Deployment');
    const schema = r.feature_schema as FeatureSchema;
    const base = { modelVersionId: r.id, version: r.version, artifactKey: r.artifact_key, task: r.task as Task };
    let job: ModelPredictInput;
    if (r.task === 'FORECASTING') {
      const v = parseInput(z.strictObject({ horizon: z.number().int().min(1).max(365) }), input);
      job = { ...base, horizon: v.horizon };
    } else {
      job = { ...base, rows: checkRows(schema, input) };
    }
    return { service: 'model.predict', input: job, hardware: r.hardware, devices: 1 };
  }
}

/** Every row must give every feature with a value of its type (null only where the model imputes). */
export function checkRows(schema: FeatureSchema, input: unknown): Array<Record<string, unknown>> {
  const v = parseInput(z.strictObject({ rows: z.array(z.record(z.string(), z.unknown())).min(1).max(MAX_PREDICT_ROWS) }), input);
  const known = new Set(schema.features.map((f) => f.name));
  v.rows.forEach((row, i) => {
    for (const key of Object.keys(row)) {
      if (!known.has(key)) throw badInput(`input.rows[${i}].${key}`, `unknown feature; the model's features are ${[...known].join(', ')}`);
    }
    for (const f of schema.features) {
      const field = `input.rows[${i}].${f.name}`;
      if (!Object.hasOwn(row, f.name)) throw badInput(field, `missing feature (${f.type})`);
      const x = row[f.name];
      if (x === null) {
        if (!f.nullable) throw badInput(field, `must not be null (${f.type})`);
        continue;
      }
      const ok =
        f.type === 'number' ? typeof x === 'number' && Number.isFinite(x)
        : f.type === 'integer' ? typeof x === 'number' && Number.isInteger(x)
        : f.type === 'boolean' ? typeof x === 'boolean'
        : f.type === 'category' ? typeof x === 'string' || typeof x === 'number' || typeof x === 'boolean'
        : f.type === 'text' ? typeof x === 'string'
        : typeof x === 'string' ? !Number.isNaN(Date.parse(x)) : typeof x === 'number' && Number.isFinite(x);
      if (!ok) {
        const want = f.type === 'datetime' ? 'an ISO-8601 date-time' : f.type === 'category' ? 'a category (string)' : `a ${f.type === 'text' ? 'string' : f.type}`;
        throw badInput(field, `must be ${want}, got ${JSON.stringify(x)?.slice(0, 40)}`);
      }
    }
  });
  return v.rows;
}

function stripNulls(v: unknown): unknown {
  if (!v || typeof v !== 'object') return v;
  return Object.fromEntries(Object.entries(v).filter(([, x]) => x !== null && x !== undefined));
}
