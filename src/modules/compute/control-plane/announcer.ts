import type { JobUpdateBus } from '../job-updates';
import type { ControlPlaneContext } from './context';
import type { WebhookSender } from './webhooks';

/** The columns every job-changing statement RETURNs, so the change can be announced. */
export const ANNOUNCE_COLUMNS = 'id, tenant_id, kind, parent_id, service, status, webhook_url, webhook_events, hardware, progress';

export interface AnnounceRow {
  id: string; tenant_id: string; kind: string; parent_id: string | null; service: string; status: string;
  webhook_url: string | null; webhook_events: string[]; hardware: string; progress: number;
  /** The job's view as committed (job-view.ts), published with the update so waiters need not read it back. */
  view?: Record<string, unknown>;
  /** Announced before, and again now (a replayed end): not counted in metrics a second time. */
  replayed?: boolean;
}

/** Views larger than this are not published (pub/sub buffers them whole, in Redis and in every subscriber): readers fetch them. */
const MAX_PUBLISHED_VIEW_BYTES = 64 * 1024;

/** Runs in the control plane after a job reaches a terminal state (e.g. a training orchestrator). */
export type TerminalHook = (row: AnnounceRow) => Promise<void>;

const TERMINAL = new Set(['SUCCEEDED', 'FAILED', 'CANCELED']);

/** After a commit: wake waiting requests and subscriptions, and queue the webhook if one is asked for. */
export class Announcer {
  private readonly terminalHooks: TerminalHook[] = [];

  onTerminal(hook: TerminalHook): void {
    this.terminalHooks.push(hook);
  }

  /**
   * `localBus`: the job-update bus of an API running in this process; it gets each update
   * directly, and ignores the published copy (JobUpdateBus).
   */
  constructor(private readonly cx: ControlPlaneContext, private readonly webhooks: WebhookSender, private readonly localBus?: JobUpdateBus) {}

  async announce(row: AnnounceRow, event: string = row.status): Promise<void> {
    await this.announceMany([row], event);
  }

  /**
   * One pipelined round trip of PUBLISHes for the batch, then webhooks and hooks where they apply.
   * `publish: false` runs only the webhooks (an event the job's next published update supersedes).
   */
  async announceMany(rows: AnnounceRow[], event?: string, opts: { publish?: boolean } = {}): Promise<void> {
    if (rows.length === 0) return;
    if (opts.publish !== false) {
      const pipe = this.cx.redis.pipeline();
      const local = this.localBus;
      const messages = rows.map(updateMessage);
      rows.forEach((r, i) => pipe.publish(this.cx.keys.jobUpdates(r.id), local ? local.tagged(messages[i]) : messages[i]));
      const published = pipe.exec();
      // After the PUBLISHes are handed to the socket: this process's waiters answer while Redis
      // carries the updates to the other API processes.
      if (local) for (const m of messages) local.deliverLocal(m);
      await published;
    }
    for (const r of rows) await this.afterPublish(r, event ?? r.status);
  }

  private async afterPublish(row: AnnounceRow, event: string): Promise<void> {
    const terminal = TERMINAL.has(event);
    if (terminal) {
      if (!row.replayed) this.cx.metrics.jobsEnded.inc({ status: event, hardware: row.hardware });
      for (const hook of this.terminalHooks) {
        await hook(row).catch((err: Error) => this.cx.log.error({ err, job: row.id }, 'terminal hook failed'));
      }
    }
    if (row.webhook_url && (terminal || row.webhook_events.includes(event))) {
      await this.webhooks.enqueue({ tenantId: row.tenant_id, jobId: row.id, type: webhookType(row.kind, event), url: row.webhook_url, throttle: event === 'PROGRESS' });
    }
  }

  /**
   * Enqueues the terminal webhook of ended jobs again (the reconciler's sweep for webhooks whose
   * announcement was lost). Terminal webhooks have a stable id, so one still queued is not
   * queued twice.
   */
  async resendTerminalWebhooks(rows: Array<Pick<AnnounceRow, 'id' | 'tenant_id' | 'kind' | 'status'> & { webhook_url: string }>): Promise<void> {
    for (const r of rows) {
      await this.webhooks.enqueue({ tenantId: r.tenant_id, jobId: r.id, type: webhookType(r.kind, r.status), url: r.webhook_url });
    }
  }

}

/**
 * A webhook's `type`: `prediction.succeeded`, `training.canceled`, … (the reconciler's webhook sweep
 * builds the same in SQL: WEBHOOK_TYPE_SQL).
 */
export function webhookType(kind: string, event: string): string {
  return `${kind === 'PREDICTION' ? 'prediction' : 'training'}.${event.toLowerCase()}`;
}
export const WEBHOOK_TYPE_SQL = `(CASE WHEN j.kind = 'PREDICTION' THEN 'prediction.' ELSE 'training.' END || lower(j.status))`;

function updateMessage(r: AnnounceRow): string {
  const base = { jobId: r.id, tenantId: r.tenant_id, status: r.status, progress: r.progress };
  if (r.view) {
    const full = JSON.stringify({ ...base, row: r.view });
    if (full.length <= MAX_PUBLISHED_VIEW_BYTES) return full;
  }
  return JSON.stringify(base);
}
