import type { Database } from '../../platform/db/database';
import { notFound } from '../../platform/errors';
import { keysetWhere, paginate, type PageArgs } from '../../platform/pagination';
import { isUuid } from '../../platform/uuid';
import { requireScope } from '../tenancy/principal';
import type { Caller } from '../tenancy/tenancy.service';

export interface WebhookDeliveryView {
  id: string;
  jobId: string;
  webhookId: string;
  eventType: string;
  url: string;
  attempt: number;
  statusCode: number | null;
  error: string | null;
  delivered: boolean;
  createdAt: Date;
}

/** Every attempt to deliver a tenant's webhooks (webhook_deliveries), newest first, for debugging receivers. */
export class WebhookDeliveriesService {
  constructor(private readonly db: Database) {}

  async list(caller: Caller, args: PageArgs & { jobId?: string | null }) {
    const p = requireScope(caller.principal, 'READ');
    if (args.jobId != null && !isUuid(args.jobId)) throw notFound('Job');
    return this.db.tenant(p.tenantId, (m) =>
      paginate<WebhookDeliveryView>(args, async (after, limit) => {
        const where = keysetWhere(after, 3);
        const rows: Array<Record<string, any>> = await m.query(
          `SELECT id, job_id, webhook_id, event_type, url, attempt, status_code, error, delivered, created_at
             FROM webhook_deliveries
            WHERE tenant_id = $1 AND ($2::uuid IS NULL OR job_id = $2) AND ${where.sql}
            ORDER BY created_at DESC, id DESC LIMIT ${limit}`,
          [p.tenantId, args.jobId ?? null, ...where.params],
        );
        return rows.map((r) => ({
          id: r.id, jobId: r.job_id, webhookId: r.webhook_id, eventType: r.event_type, url: r.url, attempt: r.attempt,
          statusCode: r.status_code, error: r.error, delivered: r.delivered, createdAt: r.created_at,
        }));
      }),
    );
  }
}
