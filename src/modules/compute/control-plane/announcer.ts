import type { ControlPlaneContext } from './context';
import type { WebhookSender } from './webhooks';

/** The columns every job-changing statement RETURNs, so the change can be announced. */
export const ANNOUNCE_COLUMNS = 'id, tenant_id, kind, parent_id, service, status, webhook_url, webhook_events, hardware, progress';

export interface AnnounceRow {
  id: string; tenant_id: string; kind: string; parent_id: string | null; service: string; status: string;
  webhook_url: string | null; webhook_events: string[]; hardware: string; progress: number;
}

/** Runs in the control plane after a job reaches a terminal state (e.g. a training orchestrator). */
export type TerminalHook = (row: AnnounceRow) => Promise<void>;

const TERMINAL = new Set(['SUCCEEDED', 'FAILED', 'CANCELED']);

/** After a commit: wake waiting requests and subscriptions, and queue the webhook if one is asked for. */
export class Announcer {
  private readonly terminalHooks: TerminalHook[] = [];

  onTerminal(hook: TerminalHook): void {
    this.terminalHooks.push(hook);
  }

  constructor(private readonly cx: ControlPlaneContext, private readonly webhooks: WebhookSender) {}

  async announce(row: AnnounceRow, event: string = row.status): Promise<void> {
    await this.announceMany([row], event);
  }

  /** One pipelined round trip of PUBLISHes for the batch, then webhooks and hooks where they apply. */
  async announceMany(rows: AnnounceRow[], event?: string): Promise<void> {
    if (rows.length === 0) return;
    const pipe = this.cx.redis.pipeline();
    for (const r of rows) pipe.publish(this.cx.keys.jobUpdates, JSON.stringify({ jobId: r.id, tenantId: r.tenant_id, status: r.status, progress: r.progress }));
    await pipe.exec();
    for (const r of rows) await this.afterPublish(r, event ?? r.status);
  }

  private async afterPublish(row: AnnounceRow, event: string): Promise<void> {
    const terminal = TERMINAL.has(event);
    if (terminal) {
      this.cx.metrics.jobsEnded.inc({ status: event, hardware: row.hardware });
      for (const hook of this.terminalHooks) {
        await hook(row).catch((err: Error) => this.cx.log.error({ err, job: row.id }, 'terminal hook failed'));
      }
    }
    if (row.webhook_url && (terminal || row.webhook_events.includes(event))) {
      const type = `${row.kind === 'PREDICTION' ? 'prediction' : 'training'}.${event.toLowerCase()}`;
      await this.webhooks.enqueue({ tenantId: row.tenant_id, jobId: row.id, type, url: row.webhook_url, throttle: event === 'PROGRESS' });
    }
  }

}
