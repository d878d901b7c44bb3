import { ANNOUNCE_COLUMNS, type Announcer, type AnnounceRow } from './announcer';
import type { ControlPlaneContext } from './context';
import type { NodeMonitor } from './node-monitor';
import type { Scheduler } from './scheduler';

/**
 * Periodically makes Redis-side state agree with Postgres, the source of truth: queued jobs the
 * admitter never heard of (a lost wake-up, Redis restarted empty), dispatches that never started,
 * running attempts their node no longer reports, deadlines, and data retention.
 */
export class Reconciler {
  private timer: NodeJS.Timeout | null = null;
  private busy = false;

  constructor(
    private readonly cx: ControlPlaneContext,
    private readonly scheduler: Scheduler,
    private readonly monitor: NodeMonitor,
    private readonly announcer: Announcer,
  ) {}

  start(): void {
    this.timer = setInterval(() => void this.tick(), this.cx.settings.reconcileIntervalMs);
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
  }

  async tick(): Promise<void> {
    if (this.busy) return;
    this.busy = true;
    try {
      await this.expireDeadlines();
      await this.adoptQueued();
      await this.redispatchStuck();
      await this.abandonOrphans();
      await this.cx.db.query(`UPDATE jobs SET input = NULL, output = NULL, data_expires_at = NULL WHERE data_expires_at < now()`);
      await this.nodeMetrics();
    } catch (err) {
      this.cx.log.warn({ err: (err as Error).message }, 'reconcile tick failed');
    } finally {
      this.busy = false;
    }
  }

  private async nodeMetrics(): Promise<void> {
    const rows: Array<{ node_id: string; used: number }> = await this.cx.db.query(
      `SELECT node_id, sum(devices)::int AS used FROM jobs WHERE status IN ('ADMITTED','RUNNING') AND node_id IS NOT NULL GROUP BY node_id`,
    );
    const used = new Map(rows.map((r) => [r.node_id, r.used]));
    const gauge = this.cx.metrics.nodeDevices;
    gauge.reset();
    for (const n of this.monitor.knownNodes()) {
      const u = Math.min(n.devices, used.get(n.name) ?? 0);
      gauge.set({ node: n.name, hardware: n.hardware, state: 'used' }, u);
      gauge.set({ node: n.name, hardware: n.hardware, state: 'free' }, n.devices - u);
    }
  }

  /** A job not started by its deadline ends CANCELED and is never billed. */
  private async expireDeadlines(): Promise<void> {
    const [rows] = (await this.cx.db.query(
      `UPDATE jobs SET status = 'CANCELED', completed_at = now(),
              error = jsonb_build_object('code', 'DEADLINE_EXCEEDED', 'message', 'The job did not start before its deadline')
        WHERE status = 'QUEUED' AND deadline_at < now()
        RETURNING ${ANNOUNCE_COLUMNS}`,
    )) as [AnnounceRow[], number];
    for (const r of rows) {
      this.scheduler.dequeue(r.id);
      await this.announcer.announce(r);
    }
  }

  private async adoptQueued(): Promise<void> {
    const rows: Array<{ id: string; tenant_id: string; hardware: 'CPU' | 'GPU'; devices: number; created_at: Date }> = await this.cx.db.query(
      `SELECT id, tenant_id, hardware, devices, created_at FROM jobs WHERE status = 'QUEUED' ORDER BY created_at LIMIT 10000`,
    );
    for (const r of rows) {
      if (!this.scheduler.isKnown(r.id)) {
        this.scheduler.enqueue({ id: r.id, tenantId: r.tenant_id, hardware: r.hardware, devices: r.devices, enqueuedAt: +r.created_at });
      }
    }
  }

  private async redispatchStuck(): Promise<void> {
    const rows: any[] = await this.cx.db.query(
      `SELECT id, tenant_id, attempt, service, input, devices, hardware, deadline_at, created_at, admitted_at, node_id FROM jobs
        WHERE status = 'ADMITTED' AND admitted_at < now() - make_interval(secs => $1 / 1000.0)`,
      [this.cx.settings.redispatchAfterMs],
    );
    for (const r of rows) {
      const node = this.monitor.nodeInfo(r.node_id);
      if (node && node.beatAt > +r.admitted_at + 1000 && !node.running.includes(`${r.id}:${r.attempt}`)) await this.scheduler.redispatch(r);
    }
  }

  private async abandonOrphans(): Promise<void> {
    const rows: Array<{ id: string; attempt: number; node_id: string; started_at: Date }> = await this.cx.db.query(
      `SELECT id, attempt, node_id, started_at FROM jobs WHERE status = 'RUNNING' AND started_at < now() - make_interval(secs => $1 / 1000.0)`,
      [this.cx.settings.orphanAfterMs],
    );
    for (const r of rows) {
      const node = this.monitor.nodeInfo(r.node_id);
      // Only a heartbeat sent well after the attempt started can say the node is not running it.
      if (node && node.beatAt > +r.started_at + 1000 && !node.running.includes(`${r.id}:${r.attempt}`)) {
        this.cx.log.warn({ job: r.id, attempt: r.attempt, node: r.node_id }, 'running attempt no longer reported by its node; requeueing');
        await this.monitor.abandonAttempts('id = $1 AND attempt = $2', [r.id, r.attempt], 'ATTEMPT_LOST', 'the node stopped reporting this attempt');
        // Freed here; adoptQueued() puts it back in the admitter's queue on the next tick.
        this.scheduler.attemptEnded(r.id, r.attempt);
      }
    }
  }
}
