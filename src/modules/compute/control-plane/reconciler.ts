import type { ArtifactStore } from '../../training/artifact-store';
import { ANNOUNCE_COLUMNS, WEBHOOK_TYPE_SQL, type Announcer, type AnnounceRow } from './announcer';
import { stopAttempt, type ControlPlaneContext } from './context';
import type { NodeMonitor } from './node-monitor';
import type { Scheduler } from './scheduler';
import { isUuid } from '../../../platform/uuid';

const INPUT_DELETE_CONCURRENCY = 8;
/** A failed deletion is tried again after this long (a store that is down is not hammered every tick). */
const INPUT_DELETE_RETRY_MS = 30_000;
/** Failed deletions kept for retrying; beyond this (a store down for long) they are logged and given up. */
const MAX_FAILED_INPUT_DELETES = 100_000;
/** Jobs whose lost terminal webhook one sweep enqueues, at most (the next sweep goes on from the last). */
const WEBHOOK_SWEEP_BATCH = 500;
/** One sweep covers at most this much end time (after a start, the look-back is swept a window per tick). */
const WEBHOOK_SWEEP_WINDOW_MS = 5 * 60_000;
/** Jobs whose data the retention sweep expires, or clears, per tick (as for webhook deliveries). */
const RETENTION_BATCH = 5000;


/**
 * Periodically makes Redis-side state agree with Postgres, the source of truth: queued jobs the
 * admitter never heard of (a lost wake-up, Redis restarted empty), dispatches that never started,
 * running attempts their node no longer reports, devices held for attempts whose end no node will
 * report, deadlines, data retention, and terminal webhooks whose announcement was lost.
 */
export class Reconciler {
  private timer: NodeJS.Timeout | null = null;
  private busy = false;

  constructor(
    private readonly cx: ControlPlaneContext,
    private readonly scheduler: Scheduler,
    private readonly monitor: NodeMonitor,
    private readonly announcer: Announcer,
    /** Where jobs' stored input images live; retention deletes them with the inputs (none: nothing to delete). */
    private readonly store: ArtifactStore | null = null,
  ) {}

  /** Stored input images whose job's input retention has cleared, not yet deleted (deleted in the background). */
  private readonly expiredInputs = new Set<string>();
  /** Deletions that failed, retried on a later tick (not before `retryFailedAt`). */
  private readonly failedInputs = new Set<string>();
  private retryFailedAt = 0;
  private deleting: Promise<void> | null = null;
  /** `job:attempt` of attempts told to stop, while their nodes still report them (each is told once). */
  private readonly stopsSent = new Set<string>();
  /**
   * `job:attempt` of attempts the admitter holds devices for though Postgres has moved on (see
   * releaseUnreported), while their nodes do not report them: since when (control-plane clock).
   */
  private readonly unreportedSince = new Map<string, number>();
  /** The webhook sweep's next window starts here (Postgres time; null: look back from now). */
  private webhookSweepFrom: Date | null = null;
  private nextWebhookSweepAt = 0;
  private nextQuotaCheckAt = 0;

  start(): void {
    this.timer = setInterval(() => void this.tick(), this.cx.settings.reconcileIntervalMs);
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
  }

  /** Resolves once the stored inputs retention has cleared so far are deleted, or have failed (tests). */
  async drainExpiredInputs(): Promise<void> {
    while (this.deleting) await this.deleting;
  }

  async tick(): Promise<void> {
    if (this.busy) return;
    this.busy = true;
    try {
      await this.expireDeadlines();
      await this.adoptQueued();
      await this.redispatchStuck();
      await this.abandonOrphans();
      await this.releaseUnreported();
      await this.expireData();
      await this.nodeMetrics();
      await this.stopSuperseded();
      await this.sweepWebhooks();
      await this.checkQuotas();
    } catch (err) {
      this.cx.log.warn({ err: (err as Error).message }, 'reconcile tick failed');
    } finally {
      this.busy = false;
    }
  }

  /**
   * Retention: inputs and outputs of jobs whose data has expired are deleted, and so are the input
   * images they stored in the artifact store (and webhook delivery attempts past their own
   * retention). The statement returns the references the inputs held
   * (`o` is the row before the update); the objects are deleted off the tick, a few at a time, so a
   * slow or failing store never holds up reconciliation. A failed deletion is logged and retried on
   * later ticks, every 30 s (in memory: a control plane restart forgets it, and the object stays
   * until a bucket lifecycle rule on `inputs/` expires it).
   */
  private async expireData(): Promise<void> {
    // Jobs ended without the recorder (cancel, deadline, lost nodes, training) get their expiry here,
    // a batch per tick. Not the trials of a training job still running: the orchestrator keeps their
    // outputs (it picks the best trial and deletes the others' model files from them at the end).
    await this.cx.db.query(
      `UPDATE jobs SET data_expires_at = COALESCE(completed_at, now()) + make_interval(secs => $1)
        WHERE id IN (
          SELECT j.id FROM jobs j
           WHERE j.data_expires_at IS NULL AND j.status IN ('SUCCEEDED','FAILED','CANCELED') AND (j.input IS NOT NULL OR j.output IS NOT NULL)
             AND NOT (j.kind = 'TRIAL' AND EXISTS (
               SELECT 1 FROM jobs p WHERE p.id = j.parent_id AND p.status NOT IN ('SUCCEEDED','FAILED','CANCELED')))
           LIMIT $2)`,
      [this.cx.settings.dataRetentionSeconds, RETENTION_BATCH],
    );
    // Webhook delivery attempts older than their retention, a batch per tick.
    await this.cx.db.query(
      `DELETE FROM webhook_deliveries WHERE id IN (
         SELECT id FROM webhook_deliveries WHERE created_at < now() - make_interval(secs => $1) ORDER BY created_at LIMIT 5000)`,
      [this.cx.settings.webhookDeliveryRetentionSeconds],
    );
    // A batch per tick, oldest first: after an outage the backlog drains over a few ticks instead of
    // one statement rewriting (and locking) every expired row while the reconciler waits on it.
    const [rows] = (await this.cx.db.query(
      `UPDATE jobs j SET input = NULL, output = NULL, data_expires_at = NULL
         FROM jobs o
        WHERE o.id = j.id AND j.id IN (SELECT id FROM jobs WHERE data_expires_at < now() ORDER BY data_expires_at LIMIT $1)
       RETURNING o.input #>> '{image,ref}' AS ref`,
      [RETENTION_BATCH],
    )) as [Array<{ ref: string | null }>, number];
    if (!this.store) return;
    for (const r of rows) if (r.ref) this.expiredInputs.add(r.ref);
    if (this.failedInputs.size && Date.now() >= this.retryFailedAt) {
      for (const ref of this.failedInputs) this.expiredInputs.add(ref);
      this.failedInputs.clear();
    }
    if (this.expiredInputs.size && !this.deleting) {
      this.deleting = this.deleteExpiredInputs().finally(() => {
        this.deleting = null;
      });
    }
  }

  private async deleteExpiredInputs(): Promise<void> {
    const store = this.store!;
    let failed = 0;
    let firstError = '';
    const worker = async () => {
      for (;;) {
        const ref = this.expiredInputs.values().next().value as string | undefined;
        if (ref === undefined) return;
        this.expiredInputs.delete(ref);
        try {
          await store.delete(ref);
        } catch (err) {
          failed++;
          firstError ||= (err as Error).message;
          if (this.failedInputs.size < MAX_FAILED_INPUT_DELETES) this.failedInputs.add(ref);
        }
      }
    };
    await Promise.all(Array.from({ length: INPUT_DELETE_CONCURRENCY }, worker));
    if (failed) {
      this.retryFailedAt = Date.now() + INPUT_DELETE_RETRY_MS;
      this.cx.log.warn({ failed, retrying: this.failedInputs.size, err: firstError }, 'deleting expired input images failed; retrying on a later tick');
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

  /**
   * Terminal webhooks are enqueued when a job's end is announced, which can be lost: a cancel whose
   * message to the control plane failed or arrived while it was down (the admission stream is read
   * from its end), a crash between a commit and its announcement, a Redis that lost the webhook
   * queue. Every `webhookSweepIntervalMs` this finds jobs that ended between the last window's end
   * (less one lag, for commits that landed late) and `webhookSweepLagMs` ago, with a webhook URL
   * and no delivery attempt of their terminal event, and enqueues it. One still queued (not yet
   * attempted) is not queued twice: terminal webhooks have a stable id. Late, not lost: the
   * receiver gets it up to two intervals after the end.
   */
  private async sweepWebhooks(): Promise<void> {
    if (Date.now() < this.nextWebhookSweepAt) return;
    this.nextWebhookSweepAt = Date.now() + this.cx.settings.webhookSweepIntervalMs;
    const { webhookSweepLagMs: lag, webhookSweepLookbackMs: lookback } = this.cx.settings;
    const [{ lo, hi, behind }]: Array<{ lo: Date; hi: Date; behind: boolean }> = await this.cx.db.query(
      `WITH w AS (
         SELECT COALESCE($1::timestamptz - make_interval(secs => $2 / 1000.0), now() - make_interval(secs => $3 / 1000.0)) AS lo,
                now() - make_interval(secs => $2 / 1000.0) AS upto
       )
       SELECT lo, least(upto, lo + make_interval(secs => $4 / 1000.0)) AS hi, upto > lo + make_interval(secs => $4 / 1000.0) AS behind FROM w`,
      [this.webhookSweepFrom, lag, lookback, WEBHOOK_SWEEP_WINDOW_MS],
    );
    const rows: Array<{ id: string; tenant_id: string; kind: string; status: string; webhook_url: string; completed_at: Date }> = await this.cx.db.query(
      `SELECT j.id, j.tenant_id, j.kind, j.status, j.webhook_url, j.completed_at
         FROM jobs j
        WHERE j.webhook_url IS NOT NULL AND j.completed_at > $1 AND j.completed_at <= $2
          AND j.status IN ('SUCCEEDED','FAILED','CANCELED')
          AND NOT EXISTS (SELECT 1 FROM webhook_deliveries d WHERE d.job_id = j.id AND d.event_type = ${WEBHOOK_TYPE_SQL})
        ORDER BY j.completed_at
        LIMIT ${WEBHOOK_SWEEP_BATCH}`,
      [lo, hi],
    );
    if (rows.length) {
      await this.announcer.resendTerminalWebhooks(rows);
      this.cx.log.warn({ jobs: rows.map((r) => r.id) }, 'enqueued terminal webhooks with no delivery attempt yet (announcement lost, or queue behind)');
    }
    // The next window starts one lag before this one's end (a commit can land after its end time),
    // or, after a full batch, at the batch's last end.
    const full = rows.length === WEBHOOK_SWEEP_BATCH;
    this.webhookSweepFrom = full ? new Date(rows[rows.length - 1].completed_at.getTime() + lag - 1) : new Date(hi.getTime() + (behind ? lag : 0));
    // Catching up (after a start, or a full batch): the next window on the next tick.
    if (full || behind) this.nextWebhookSweepAt = 0;
  }

  /** Quotas as Postgres has them, every `quotaCheckIntervalMs`: `setQuota`'s message to the admitter can be lost. */
  private async checkQuotas(): Promise<void> {
    if (Date.now() < this.nextQuotaCheckAt) return;
    this.nextQuotaCheckAt = Date.now() + this.cx.settings.quotaCheckIntervalMs;
    const rows: Array<{ tenant_id: string; hardware: 'CPU' | 'GPU'; guaranteed: number; limit: number }> =
      await this.cx.db.query('SELECT tenant_id, hardware, guaranteed, "limit" FROM quotas');
    const changed = this.scheduler.refreshQuotas(rows.map((r) => ({ tenantId: r.tenant_id, hardware: r.hardware, guaranteed: r.guaranteed, limit: r.limit })));
    if (changed) this.cx.log.warn({ changed }, 'quotas the admitter had missed were applied from Postgres');
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
      `SELECT id, tenant_id, attempt, service, input, devices, hardware, deadline_at, created_at, admitted_at, node_id, borrowed FROM jobs
        WHERE status = 'ADMITTED' AND admitted_at < now() - make_interval(secs => $1 / 1000.0)`,
      [this.cx.settings.redispatchAfterMs],
    );
    for (const r of rows) {
      const node = this.monitor.nodeInfo(r.node_id);
      if (node && node.beatAt > +r.admitted_at + 1000 && !node.running.includes(`${r.id}:${r.attempt}`)) await this.scheduler.redispatch(r);
    }
  }

  /**
   * Attempts a node reports running that Postgres no longer has as the job's running attempt
   * (cancelled, preempted, given up as lost) are stopped: a stopped marker and a cancel message,
   * as a preemption sends. This repairs a message lost together with its marker (Redis restarted
   * empty, or a cancel whose Redis writes failed after its commit): left alone, such an attempt ran
   * to its end on devices the admitter had given to another job, and a cancelled one was billed for
   * all of it. An ended job is judged only by a heartbeat sent well after its end (a node reports
   * its attempts up to a beat late), and each attempt is told once while its node reports it.
   */
  private async stopSuperseded(): Promise<void> {
    const reported = new Map<string, { id: string; attempt: number; beatAt: number }>();
    const stillReported = new Set<string>();
    for (const n of this.monitor.knownNodes()) {
      for (const a of n.running) {
        stillReported.add(a);
        const i = a.lastIndexOf(':');
        const id = a.slice(0, i);
        if (isUuid(id) && !this.stopsSent.has(a)) reported.set(a, { id, attempt: Number(a.slice(i + 1)), beatAt: n.beatAt });
      }
    }
    for (const key of this.stopsSent) if (!stillReported.has(key)) this.stopsSent.delete(key);
    if (reported.size === 0) return;
    const rows: Array<{ id: string; attempt: number; status: string; completed_at: Date | null }> = await this.cx.db.query(
      `SELECT id, attempt, status, completed_at FROM jobs WHERE id = ANY($1::uuid[])`, [[...new Set([...reported.values()].map((r) => r.id))]],
    );
    const jobs = new Map(rows.map((r) => [r.id, r]));
    const stop = [...reported].filter(([, r]) => {
      const job = jobs.get(r.id);
      if (!job) return false; // not this deployment's, or not committed yet: not ours to judge
      if (job.status === 'ADMITTED' || job.status === 'RUNNING') return job.attempt !== r.attempt;
      if (job.status === 'QUEUED') return true;
      return job.completed_at !== null && r.beatAt > +job.completed_at + 1000;
    });
    if (stop.length === 0) return;
    const { redis, keys: k } = this.cx;
    const tell = redis.multi();
    for (const [, r] of stop) stopAttempt(tell, k, r.id, r.attempt, 'SUPERSEDED');
    await tell.exec();
    for (const [key] of stop) this.stopsSent.add(key);
    this.cx.log.warn({ attempts: stop.map(([key]) => key) }, 'stopped attempts their nodes still run though Postgres has moved on');
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

  /**
   * Devices the admitter holds for an attempt are given back when the attempt's `ended` event is
   * read, and only a node that ran the attempt sends one. An attempt no node ever took (its
   * dispatch lost: Redis restarted empty) is re-sent while its job is ADMITTED (redispatchStuck)
   * and given up while RUNNING (abandonOrphans), but once its job has left that attempt in
   * Postgres (cancelled by the client or a spend limit; or any other way that leaves no end to
   * read, such as a node's end lost with Redis) nothing would ever free them: the devices, and the
   * tenant's quota usage, stayed held until the node was removed or the control plane restarted.
   *
   * So an attempt the admitter holds whose job is no longer on it (ended, queued again, on
   * another attempt, gone) and whose live node does not report it is given back once that has
   * held for `orphanAfterMs` (the same grace as a lost running attempt) and a heartbeat sent more
   * than a beat after it was first seen still does not report it (a node reports its attempts up to
   * a beat late). One the node reports, it still uses (a cancelled attempt runs until its stop
   * reaches the node, stopSuperseded repairs a lost stop): its devices come back with its end, the
   * normal way. A node that is not live is the node monitor's: removing it frees all it held.
   */
  private async releaseUnreported(): Promise<void> {
    // The admitter holds devices only on nodes; with none live there is nothing of this to give back.
    if (this.monitor.knownNodes().length === 0) {
      this.unreportedSince.clear();
      return;
    }
    const now = Date.now();
    const unreported = new Map<string, { jobId: string; attempt: number; nodeId: string }>();
    for (const h of this.scheduler.heldAttempts()) {
      const key = `${h.jobId}:${h.attempt}`;
      const node = this.monitor.nodeInfo(h.nodeId);
      if (node && !node.running.includes(key)) unreported.set(key, h);
    }
    for (const key of this.unreportedSince.keys()) if (!unreported.has(key)) this.unreportedSince.delete(key);
    if (unreported.size === 0) return;
    const rows: Array<{ id: string; attempt: number; status: string }> = await this.cx.db.query(
      `SELECT id, attempt, status FROM jobs WHERE id = ANY($1::uuid[])`, [[...new Set([...unreported.values()].map((u) => u.jobId))]],
    );
    const jobs = new Map(rows.map((r) => [r.id, r]));
    const released: string[] = [];
    for (const [key, u] of unreported) {
      const job = jobs.get(u.jobId);
      // Still the job's attempt in Postgres: redispatchStuck and abandonOrphans look after it.
      if (job && (job.status === 'ADMITTED' || job.status === 'RUNNING') && job.attempt === u.attempt) {
        this.unreportedSince.delete(key);
        continue;
      }
      const since = this.unreportedSince.get(key);
      if (since === undefined) {
        this.unreportedSince.set(key, now);
        continue;
      }
      if (now - since < this.cx.settings.orphanAfterMs) continue;
      // The node's latest heartbeat (newer than the one above, perhaps, after the query).
      const node = this.monitor.nodeInfo(u.nodeId);
      if (!node || node.beatAt <= since + 1000 || node.running.includes(key)) continue;
      this.unreportedSince.delete(key);
      this.scheduler.attemptEnded(u.jobId, u.attempt);
      released.push(key);
    }
    if (released.length) {
      this.cx.log.warn({ attempts: released }, 'gave back devices of attempts whose jobs moved on and that no node reports (their ends will never be read)');
    }
  }
}
