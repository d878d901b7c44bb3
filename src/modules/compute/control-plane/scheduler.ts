import { Queue } from 'bullmq';
import { Admitter, toPending, type ActiveJob, type Admission, type NodeSpec, type Preemption } from '../admission';
import { MAX_DISPATCH_BATCH, bullPrefix, type AdmissionMessage, type DispatchMessage, type DispatchPayload, type Hardware } from '../../../platform/queue/messages';
import { relaxedRun, stopAttempt, type ControlPlaneContext } from './context';
import { recordTakenBackAttempts } from './superseded';
import { statement } from '../../../platform/db/sql';

interface AdmittedRow {
  id: string; tenant_id: string; attempt: number; service: string; input: unknown; devices: number;
  hardware: Hardware; deadline_at: Date | null; created_at: Date; node_id: string;
}

/**
 * The job path's statements find their jobs by primary key, one probe per array element. Their
 * status guards are written `status || '' = …` so that they are filters, never index conditions:
 * otherwise a plan made while few jobs were queued or running (a plan is cached per connection)
 * scans every QUEUED or active job through jobs_active_idx on each call, however long the backlog
 * has grown since.
 */
export const ADMIT = statement('scheduler.admit', `
  UPDATE jobs j SET status = 'ADMITTED', node_id = a.node_id, borrowed = a.borrowed, attempt = j.attempt + 1, admitted_at = now()
    FROM unnest($1::uuid[], $2::text[], $3::bool[]) AS a(id, node_id, borrowed)
   WHERE j.id = a.id AND j.status || '' = 'QUEUED'
  RETURNING j.id, j.tenant_id, j.attempt, j.service, j.input, j.devices, j.hardware, j.deadline_at, j.created_at, j.node_id`);

/** A job Postgres has ADMITTED or RUNNING on a node, as the admitter holds it. */
function activeJobOf(j: { id: string; tenant_id: string; hardware: Hardware; devices: number; created_at: Date; node_id: string; admitted_at: Date | null; borrowed: boolean }): ActiveJob {
  return {
    id: j.id, tenantId: j.tenant_id, hardware: j.hardware, devices: j.devices, enqueuedAt: +j.created_at,
    nodeId: j.node_id, admittedAt: +(j.admitted_at ?? j.created_at), borrowed: j.borrowed,
  };
}

/**
 * The admitter's I/O shell: feeds the pure Admitter from Postgres and Redis wake-ups, writes its
 * decisions to Postgres (guarded by status, so a job cancelled meanwhile is never dispatched) and
 * dispatches admitted attempts to their node's BullMQ queue.
 */
export class Scheduler {
  private admitter: Admitter;
  /** The attempt the admitter holds devices for, so a stale attempt's end never frees a newer one's. */
  private readonly activeAttempt = new Map<string, number>();
  private readonly queues = new Map<string, Queue<DispatchMessage>>();
  private running = false;
  /** The last round's dispatch, still in flight while the next round is decided. */
  private dispatching: Promise<void> = Promise.resolve();
  private wakeRequested = false;
  private wakeResolve: (() => void) | null = null;
  private loop: Promise<void> | null = null;
  private reader: ReturnType<ControlPlaneContext['connect']> | null = null;
  private readerLoop: Promise<void> | null = null;
  /** Called when the API cancelled a job (for announcing it: webhooks live in the control plane). */
  onCanceled: ((jobId: string) => Promise<void>) | null = null;

  constructor(private readonly cx: ControlPlaneContext) {
    this.admitter = new Admitter({ nodes: [], quotas: [], defaultQuota: cx.settings.defaultQuota, active: [], pending: [] });
  }

  /**
   * Rebuilds the admitter from Postgres (the truth), then starts deciding. The admission stream is
   * read from where it ended before the load, not from its end after it: a message sent while
   * Postgres was read (a quota set, a job cancelled) is read too, rather than fall between the two
   * (reading one the load already saw again changes nothing).
   */
  async start(nodes: NodeSpec[]): Promise<void> {
    const { db, settings } = this.cx;
    const since = await this.streamEnd();
    const quotas: Array<{ tenant_id: string; hardware: Hardware; guaranteed: number; limit: number }> = await db.query('SELECT * FROM quotas');
    const active: any[] = await db.query(
      `SELECT id, tenant_id, hardware, devices, node_id, borrowed, attempt, created_at, admitted_at FROM jobs WHERE status IN ('ADMITTED','RUNNING') AND node_id IS NOT NULL`,
    );
    const pending: any[] = await db.query(`SELECT id, tenant_id, hardware, devices, created_at FROM jobs WHERE status = 'QUEUED' ORDER BY created_at`);
    this.admitter = new Admitter({
      nodes, defaultQuota: settings.defaultQuota,
      quotas: quotas.map((q) => ({ tenantId: q.tenant_id, hardware: q.hardware, guaranteed: q.guaranteed, limit: q.limit })),
      active: active.map(activeJobOf),
      pending: pending.map((j) => ({ id: j.id, tenantId: j.tenant_id, hardware: j.hardware, devices: j.devices, enqueuedAt: +j.created_at })),
    });
    for (const j of active) this.activeAttempt.set(j.id, j.attempt);
    this.running = true;
    this.reader = this.cx.connect('admission-reader');
    this.readerLoop = this.readWakeups(since);
    this.loop = this.run();
  }

  async stop(): Promise<void> {
    this.running = false;
    this.wake();
    this.reader?.disconnect();
    await Promise.allSettled([this.loop, this.readerLoop]);
    await this.dispatching;
    await Promise.all([...this.queues.values()].map((q) => q.close()));
  }

  wake(): void {
    this.wakeRequested = true;
    this.wakeResolve?.();
  }

  addNode(node: NodeSpec): void {
    this.admitter.addNode(node);
    this.wake();
  }

  /** A node is gone: its jobs go back to the admitter's queue (the caller updates Postgres). */
  removeNode(nodeId: string): void {
    for (const job of this.admitter.removeNode(nodeId)) this.activeAttempt.delete(job.id);
    const q = this.queues.get(nodeId);
    this.queues.delete(nodeId);
    void q?.obliterate({ force: true }).catch(() => undefined).finally(() => q.close());
    this.wake();
  }

  setQuota(q: { tenantId: string; hardware: Hardware; guaranteed: number; limit: number }): void {
    this.recordBorrowed(this.admitter.setQuota(q));
    this.wake();
  }

  /**
   * Applies the quotas as Postgres has them where the admitter's differ (the reconciler's check:
   * a quota message lost with Redis would otherwise hold until the next start). Returns how many changed.
   */
  refreshQuotas(rows: Array<{ tenantId: string; hardware: Hardware; guaranteed: number; limit: number }>): number {
    let changed = 0;
    const reflagged: ActiveJob[] = [];
    for (const q of rows) {
      const have = this.admitter.explicitQuota(q.tenantId, q.hardware);
      if (have && have.guaranteed === q.guaranteed && have.limit === q.limit) continue;
      reflagged.push(...this.admitter.setQuota(q));
      changed++;
    }
    this.recordBorrowed(reflagged);
    if (changed) this.wake();
    return changed;
  }

  /**
   * Writes `jobs.borrowed` for running jobs the admitter made borrowed because their tenant's
   * guarantee was lowered. Best effort: a restart flags them again from the quotas (the admitter
   * flags whatever a guarantee does not cover); the stored flag keeps them borrowed across a
   * restart should the guarantee be raised again. Per attempt, so a job preempted and admitted
   * again meanwhile keeps its new admission's flag; an admission still being written keeps its own.
   */
  private recordBorrowed(jobs: ActiveJob[]): void {
    const held = jobs.filter((j) => this.activeAttempt.has(j.id));
    if (!held.length) return;
    void this.cx.db
      .query(
        `UPDATE jobs j SET borrowed = true FROM unnest($1::uuid[], $2::int[]) AS b(id, attempt)
          WHERE j.id = b.id AND j.attempt = b.attempt AND j.status IN ('ADMITTED','RUNNING')`,
        [held.map((j) => j.id), held.map((j) => this.activeAttempt.get(j.id))],
      )
      .catch((err: Error) => {
        this.cx.log.warn({ err: err.message, jobs: held.map((j) => j.id) }, 'recording jobs borrowed after a lowered guarantee failed; a restart flags them again');
      });
  }

  enqueue(job: { id: string; tenantId: string; hardware: Hardware; devices: number; enqueuedAt: number }): void {
    if (this.admitter.isPending(job.id) || this.admitter.activeJob(job.id)) return;
    this.admitter.enqueue(job);
    this.wake();
  }

  /** An attempt ended (or was abandoned): free its devices if it is the one the admitter holds. */
  attemptEnded(jobId: string, attempt: number): void {
    if (this.activeAttempt.get(jobId) !== attempt) return;
    this.activeAttempt.delete(jobId);
    this.admitter.jobFinished(jobId);
    this.wake();
  }

  /** A queued job left the queue without running (cancelled, deadline). */
  dequeue(jobId: string): void {
    this.admitter.dequeue(jobId);
  }

  /**
   * The attempts the admitter holds devices for, with their nodes (for the reconciler, which gives
   * back those whose end no node will report). Not those whose admission is still being written.
   */
  *heldAttempts(): IterableIterator<{ jobId: string; attempt: number; nodeId: string }> {
    for (const [jobId, attempt] of this.activeAttempt) {
      const job = this.admitter.activeJob(jobId);
      if (job) yield { jobId, attempt, nodeId: job.nodeId };
    }
  }

  isKnown(jobId: string): boolean {
    return this.admitter.isPending(jobId) || this.activeAttempt.has(jobId);
  }

  usage() {
    return this.admitter.snapshotUsage();
  }

  /**
   * Re-sends an attempt's dispatch (same BullMQ job id, so a message still queued is not doubled).
   * An attempt the admitter does not hold (its admission committed but the answer was lost) is
   * taken on first, so that its devices count until it ends.
   */
  async redispatch(row: AdmittedRow & { borrowed: boolean; admitted_at: Date }): Promise<void> {
    if (!this.admitter.isPending(row.id) && !this.admitter.activeJob(row.id)) {
      this.admitter.addActive(activeJobOf(row));
      this.activeAttempt.set(row.id, row.attempt);
    }
    await this.dispatch([row]);
  }

  private async run(): Promise<void> {
    while (this.running) {
      if (!this.wakeRequested) {
        await new Promise<void>((resolve) => {
          this.wakeResolve = resolve;
          setTimeout(resolve, 250);
        });
        this.wakeResolve = null;
      }
      this.wakeRequested = false;
      if (!this.running) break;
      try {
        await this.decideOnce();
      } catch (err) {
        this.cx.log.error({ err }, 'admission round failed; retrying');
        await new Promise((r) => setTimeout(r, 200));
        this.wakeRequested = true;
      }
    }
  }

  private async decideOnce(): Promise<void> {
    const decision = this.admitter.decide(Date.now());
    if (decision.preempt.length) {
      // A preempted job's dispatch must be out before its cancel is published.
      await this.dispatching;
      try {
        await this.applyPreemptions(decision.preempt);
      } catch (err) {
        this.revert(decision.admit, decision.preempt);
        throw err;
      }
    }
    if (decision.admit.length) await this.applyAdmissions(decision.admit);
    const m = this.cx.metrics;
    m.pendingJobs.reset();
    for (const row of this.admitter.pendingCount()) m.pendingJobs.set({ tenant: row.tenantId, hardware: row.hardware }, row.jobs);
  }

  /**
   * Takes back a decision whose write failed (a dropped connection, a failover), so that the
   * admitter agrees with Postgres again and the next round decides afresh: admitted jobs are
   * queued again and their devices freed, preempted jobs hold theirs again. Left alone, the
   * admitted jobs would hold devices while QUEUED in Postgres, never dispatched, and never
   * re-adopted by the reconciler either, since the admitter knows them.
   */
  private revert(admits: Admission[], preempts: Preemption[]): void {
    for (const a of admits) {
      const job = this.admitter.activeJob(a.jobId);
      if (!job) continue;
      this.admitter.jobFinished(a.jobId);
      this.admitter.enqueue(toPending(job));
    }
    for (const p of preempts) {
      // Still queued again by the decision: it runs on. Unless its end was read meanwhile (its
      // attempt is no longer held): then it has finished, and the reconciler adopts it if Postgres
      // has it queued.
      if (!this.admitter.dequeue(p.jobId)) continue;
      if (this.activeAttempt.has(p.jobId)) this.admitter.addActive(p.victim);
    }
    this.wake();
  }

  private async applyAdmissions(admits: Admission[]): Promise<void> {
    let rows: AdmittedRow[];
    try {
      rows = await relaxedRun<AdmittedRow>(this.cx, ADMIT, [admits.map((a) => a.jobId), admits.map((a) => a.nodeId), admits.map((a) => a.borrowed)]);
    } catch (err) {
      // Perhaps committed, with only the answer lost: then the next round's UPDATE finds those jobs
      // ADMITTED already and gives their devices back, and the reconciler dispatches them (redispatch).
      this.revert(admits, []);
      throw err;
    }
    const admitted = new Set(rows.map((r) => r.id));
    // Cancelled (or otherwise moved on) between enqueue and admission: give the devices back.
    for (const a of admits) if (!admitted.has(a.jobId)) this.admitter.jobFinished(a.jobId);
    const now = Date.now();
    for (const r of rows) {
      this.activeAttempt.set(r.id, r.attempt);
      this.cx.metrics.admissionWait.observe({ hardware: r.hardware }, (now - +r.created_at) / 1000);
    }
    // One round ahead: this round's dispatch goes out while the next round decides and writes, and
    // a round waits only for the dispatch before its own. The jobs are ADMITTED in Postgres
    // already: a dispatch that fails is sent again by the reconciler (redispatchAfterMs).
    const previous = this.dispatching;
    this.dispatching = this.dispatch(rows).catch((err: Error) => {
      this.cx.log.warn({ err: err.message, jobs: rows.length }, 'dispatch failed; the reconciler sends it again');
    });
    await previous;
  }

  /**
   * One BullMQ job per node and round: a lone attempt as itself (job id `job.attempt`, so a
   * re-dispatch of it is deduplicated by BullMQ), several as one batch (`DispatchBatch`, job id
   * `batch.` + its first attempt's, unique since an attempt is admitted once). A batch costs Redis
   * and the node one add, one pickup and one completion instead of one per attempt; a re-dispatch
   * (reconciler) always goes alone, and a node drops a copy of an attempt it is running. Node agents
   * must know batches before a control plane sends them: upgrade nodes first.
   */
  private async dispatch(rows: AdmittedRow[]): Promise<void> {
    const byNode = new Map<string, AdmittedRow[]>();
    for (const r of rows) {
      const list = byNode.get(r.node_id);
      if (list) list.push(r);
      else byNode.set(r.node_id, [r]);
    }
    const payload = (r: AdmittedRow): DispatchPayload => ({
      jobId: r.id, tenantId: r.tenant_id, attempt: r.attempt, service: r.service, input: r.input,
      devices: r.devices, hardware: r.hardware, deadlineAt: r.deadline_at ? +r.deadline_at : null,
    });
    const opts = (jobId: string) => ({ jobId, removeOnComplete: true, removeOnFail: 1000 });
    const adds: Array<Promise<unknown>> = [];
    for (const [node, list] of byNode) {
      const q = this.queueFor(node);
      for (let i = 0; i < list.length; i += MAX_DISPATCH_BATCH) {
        const part = list.slice(i, i + MAX_DISPATCH_BATCH);
        const first = part[0];
        adds.push(part.length === 1
          ? q.add(first.service, payload(first), opts(`${first.id}.${first.attempt}`))
          : q.add('batch', { attempts: part.map(payload) }, opts(`batch.${first.id}.${first.attempt}`)));
      }
    }
    await Promise.all(adds);
  }

  /**
   * Requeues the victims in Postgres, then tells their nodes: pub/sub at once, and a marker per
   * attempt that the node reads before it starts an attempt and with every heartbeat, so a lost
   * message (a node reconnecting) costs a heartbeat, not the victim's whole run on devices that
   * were given to another job. Only the transaction may throw (the decision is then reverted): once it
   * has committed, the victims are queued in Postgres whatever Redis does.
   */
  private async applyPreemptions(preempts: Preemption[]): Promise<void> {
    const ids = preempts.map((p) => p.jobId);
    const rows: Array<{ id: string; attempt: number; hardware: Hardware }> = await this.cx.db.transaction(async (m) => {
      // The preempted attempts are recorded, not billable, before they are taken back: their ends,
      // if their nodes still report them, then bill nothing whatever the jobs become.
      await recordTakenBackAttempts(m, 'id = ANY($1::uuid[])', [ids], 'PREEMPTED');
      return (await m.query(
        `UPDATE jobs SET status = 'QUEUED', node_id = NULL, borrowed = false, progress = 0
          WHERE id = ANY($1::uuid[]) AND status IN ('ADMITTED','RUNNING')
          RETURNING id, attempt, hardware`,
        [ids],
      ))[0];
    });
    const { redis, keys: k, metrics } = this.cx;
    const tell = redis.multi();
    for (const r of rows) {
      this.activeAttempt.delete(r.id);
      metrics.preemptions.inc({ hardware: r.hardware });
      stopAttempt(tell, k, r.id, r.attempt, 'PREEMPTED').publish(k.jobUpdates(r.id), JSON.stringify({ jobId: r.id, status: 'QUEUED' }));
    }
    if (rows.length) {
      await tell.exec().catch((err: Error) => {
        this.cx.log.warn({ err: err.message, jobs: rows.map((r) => r.id) }, 'telling nodes of preemptions failed; their attempts run on, unbilled');
      });
    }
    this.cx.log.info({ preempted: preempts.map((p) => ({ job: p.jobId, for: p.forJobId })) }, 'preempted borrowed jobs');
  }

  private queueFor(node: string): Queue<DispatchMessage> {
    let q = this.queues.get(node);
    if (!q) {
      q = new Queue<DispatchMessage>(`node-${node}`, { connection: this.cx.connect(`dispatch-${node}`), prefix: bullPrefix(this.cx.prefix) });
      this.queues.set(node, q);
    }
    return q;
  }

  /** The admission stream's last entry id now ('0-0' when it is empty; '$', its end when read, if Redis cannot say). */
  private async streamEnd(): Promise<string> {
    try {
      const [last] = (await this.cx.redis.xrevrange(this.cx.keys.admission, '+', '-', 'COUNT', 1)) as Array<[string, string[]]>;
      return last?.[0] ?? '0-0';
    } catch {
      return '$';
    }
  }

  /** Wake-ups from the API (new jobs, cancellations, quotas) through a Redis stream, from `since` on. */
  private async readWakeups(since: string): Promise<void> {
    let lastId = since;
    while (this.running && this.reader) {
      try {
        const res = (await this.reader.xread('COUNT', 500, 'BLOCK', 1000, 'STREAMS', this.cx.keys.admission, lastId)) as
          | Array<[string, Array<[string, string[]]>]> | null;
        if (!res) continue;
        for (const [, entries] of res) {
          for (const [id, fields] of entries) {
            lastId = id;
            const msg = JSON.parse(fields[1]) as AdmissionMessage;
            if (msg.op === 'canceled') {
              this.dequeue(msg.id);
              await this.onCanceled?.(msg.id);
            } else if (msg.op === 'quota') this.setQuota(msg);
            else this.enqueue(msg);
          }
        }
      } catch (err) {
        if (!this.running) return;
        this.cx.log.warn({ err: (err as Error).message }, 'admission stream read failed; retrying');
        await new Promise((r) => setTimeout(r, 500));
      }
    }
  }
}
