import type { Redis } from 'ioredis';
import { z } from 'zod';
import type { Database } from '../../platform/db/database';
import { notFound } from '../../platform/errors';
import type { AdmissionMessage, keys } from '../../platform/queue/messages';
import { parseInput } from '../../platform/validation';
import { requireOperator } from '../tenancy/principal';
import { audit, type Caller } from '../tenancy/tenancy.service';

const quotaSchema = z
  .strictObject({
    tenantId: z.uuid(),
    hardware: z.enum(['CPU', 'GPU']).nullish().transform((h) => h ?? 'CPU'),
    guaranteed: z.number().int().min(0).max(100_000),
    limit: z.number().int().min(0).max(100_000),
  })
  .refine((q) => q.limit >= q.guaranteed, { message: 'must be at least guaranteed', path: ['limit'] });

/** Platform operators: the node pool and per-tenant quotas (operator role only). */
export class OperatorService {
  constructor(private readonly db: Database, private readonly redis: Redis, private readonly k: ReturnType<typeof keys>) {}

  async nodes(caller: Caller) {
    requireOperator(caller.principal);
    const rows: any[] = await this.db.withSettings({ 'app.operator': 'on' }, (m) => m.query(
      `SELECT n.*, (SELECT count(*) FROM jobs j WHERE j.node_id = n.id AND j.status IN ('ADMITTED','RUNNING'))::int AS running
         FROM nodes n ORDER BY n.status, n.id`,
    ));
    return rows.map((n) => ({
      id: n.id, name: n.id, hardware: n.hardware, gpuCount: n.devices, gpuModel: n.gpu_model, status: n.status,
      lastHeartbeatAt: n.last_heartbeat_at, runningJobs: n.running,
    }));
  }

  async quotas(caller: Caller) {
    requireOperator(caller.principal);
    // Tenant names cross tenants: the operator flag opens the tenants policy for this transaction only.
    return this.db.withSettings({ 'app.operator': 'on' }, async (m) => {
      const rows: any[] = await m.query(
        `SELECT q.*, t.name, (SELECT COALESCE(sum(devices), 0) FROM jobs j WHERE j.tenant_id = q.tenant_id AND j.hardware = q.hardware
                 AND j.status IN ('ADMITTED','RUNNING'))::int AS used
           FROM quotas q JOIN tenants t ON t.id = q.tenant_id ORDER BY t.name, q.hardware`,
      );
      return rows.map((q) => ({ tenant: { id: q.tenant_id, name: q.name }, hardware: q.hardware, guaranteed: q.guaranteed, limit: q.limit, used: q.used }));
    });
  }

  async setQuota(caller: Caller, raw: unknown) {
    const p = requireOperator(caller.principal);
    const input = parseInput(quotaSchema, raw);
    const tenant = await this.db.withSettings({ 'app.operator': 'on' }, async (m) => {
      const [t]: Array<{ id: string; name: string }> = await m.query('SELECT id, name FROM tenants WHERE id = $1', [input.tenantId]);
      if (!t) throw notFound('Tenant');
      await m.query(
        `INSERT INTO quotas (tenant_id, hardware, guaranteed, "limit") VALUES ($1, $2, $3, $4)
         ON CONFLICT (tenant_id, hardware) DO UPDATE SET guaranteed = $3, "limit" = $4`,
        [input.tenantId, input.hardware, input.guaranteed, input.limit],
      );
      return t;
    });
    await this.db.tenant(input.tenantId, (m) =>
      audit(m, input.tenantId, { actorType: 'USER', actorId: p.kind === 'user' ? p.userId : null }, 'quota.set', 'Quota', `${input.tenantId}:${input.hardware}`, input),
    );
    // Committed: if telling the admitter fails, the reconciler's quota check applies it within
    // seconds, so the operator is answered with the quota set either way.
    const msg: AdmissionMessage = { op: 'quota', ...input };
    await this.redis.xadd(this.k.admission, '*', 'm', JSON.stringify(msg)).catch(() => undefined);
    return { tenant, hardware: input.hardware, guaranteed: input.guaranteed, limit: input.limit, used: 0 };
  }
}
