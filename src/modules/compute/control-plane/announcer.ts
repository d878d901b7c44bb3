import type { ControlPlaneContext } from './context';
import type { WebhookSender } from './webhooks';

/** The columns every job-changing statement RETURNs, so the change can be announced. */
export const ANNOUNCE_COLUMNS = 'id, tenant_id, kind, status, webhook_url, webhook_events, hardware, progress';

export interface AnnounceRow {
  id: string; tenant_id: string; kind: string; status: string; webhook_url: string | null;
  webhook_events: string[]; hardware: string; progress: number;
}

const TERMINAL = new Set(['SUCCEEDED', 'FAILED', 'CANCELED']);

/** After a commit: wake waiting requests and subscriptions, and queue the webhook if one is asked for. */
export class Announcer {
  constructor(private readonly cx: ControlPlaneContext, private readonly webhooks: WebhookSender) {}

  async announce(row: AnnounceRow, event: string = row.status): Promise<void> {
    await this.cx.redis.publish(this.cx.keys.jobUpdates, JSON.stringify({ jobId: row.id, tenantId: row.tenant_id, status: row.status, progress: row.progress }));
    const terminal = TERMINAL.has(event);
    if (terminal) this.cx.metrics.jobsEnded.inc({ status: event, hardware: row.hardware });
    if (row.webhook_url && (terminal || row.webhook_events.includes(event))) {
      const type = `${row.kind === 'PREDICTION' ? 'prediction' : 'training'}.${event.toLowerCase()}`;
      await this.webhooks.enqueue({ tenantId: row.tenant_id, jobId: row.id, type, url: row.webhook_url, throttle: event === 'PROGRESS' });
    }
  }
}
