import type { NodeEvent } from '../../../platform/queue/messages';
import { durableRun, relaxedRun, type ControlPlaneContext } from './context';
import { statement } from '../../../platform/db/sql';
import type { Scheduler } from './scheduler';
import { ANNOUNCE_COLUMNS, type Announcer, type AnnounceRow } from './announcer';
import { VIEW_COLUMNS } from '../job-view';

const GROUP = 'control-plane';
const MAX_LOG_LINES = 200;
/** Events read and not yet committed, at most: beyond this the reader waits for the writer. */
const MAX_BUFFERED = 5000;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));


/**
 * Persists what nodes report. Node events arrive on a Redis stream read by a consumer group and
 * are acknowledged only after their Postgres transaction commits, so a crash replays them; every
 * write is idempotent (guarded by job attempt and status; the ledger is unique per job × attempt),
 * so a replayed or duplicated message changes nothing.
 */
export class Recorder {
  private running = false;
  private loop: Promise<void> | null = null;
  private reader: ReturnType<ControlPlaneContext['connect']> | null = null;
  private readonly consumer = `cp-${process.pid}`;
  /** Read, not yet committed (ids: every stream entry read; events: those that still had a body). */
  private buffered: { ids: string[]; events: NodeEvent[] } = { ids: [], events: [] };
  private writing = false;
  private writer: Promise<void> = Promise.resolve();
  private rereadPending = false;
  private nextClaimAt = 0;

  constructor(
    private readonly cx: ControlPlaneContext,
    private readonly scheduler: Scheduler,
    private readonly announcer: Announcer,
  ) {}

  async start(): Promise<void> {
    this.reader = this.cx.connect('recorder');
    await this.ensureGroup();
    this.running = true;
    this.loop = this.run();
  }

  async stop(): Promise<void> {
    this.running = false;
    this.reader?.disconnect();
    await this.loop?.catch(() => undefined);
  }

  private async ensureGroup(): Promise<void> {
    await this.cx.redis.xgroup('CREATE', this.cx.keys.events, GROUP, '0', 'MKSTREAM').catch((err: Error) => {
      if (!/BUSYGROUP/.test(err.message)) throw err;
    });
  }

  /**
   * Reading and writing are decoupled. The reader takes node events off the stream as they come
   * and gives each end's devices back to the admitter at once (the node is done with them), so a
   * node's slots turn over at the pace of the stream, not of the commits. The writer meanwhile
   * commits what has been read, in read order, everything read during its last commit in one
   * batch (group commit: the slower a commit, the more it carries), and acknowledges each batch
   * only after its commit. A failed write is retried with the same events before any later ones;
   * a failed acknowledgement makes the reader go over its pending entries again (writes are
   * idempotent). At most MAX_BUFFERED events wait unwritten; beyond that the reader waits.
   */
  private async run(): Promise<void> {
    // First our own pending (delivered, unacknowledged) messages from before a crash, then new ones.
    let cursor = '0';
    while (this.running && this.reader) {
      try {
        if (Date.now() >= this.nextClaimAt) await this.claimAbandoned();
        if (this.rereadPending) {
          this.rereadPending = false;
          cursor = '0';
        }
        if (this.buffered.ids.length >= MAX_BUFFERED) {
          await this.writer;
          continue;
        }
        const res = (await this.reader.xreadgroup(
          'GROUP', GROUP, this.consumer, 'COUNT', 200, 'BLOCK', 1000, 'STREAMS', this.cx.keys.events, cursor,
        )) as Array<[string, Array<[string, string[] | null]>]> | null;
        const entries = res?.[0]?.[1] ?? [];
        if (cursor !== '>') cursor = entries.length === 0 ? '>' : entries[entries.length - 1][0];
        for (const [id, fields] of entries) {
          this.buffered.ids.push(id);
          if (!fields) continue;
          const e = JSON.parse(fields[1]) as NodeEvent;
          this.buffered.events.push(e);
          if (e.type === 'ended') this.scheduler.attemptEnded(e.jobId, e.attempt);
        }
        if (entries.length) this.startWriter();
      } catch (err) {
        if (!this.running) break;
        const msg = (err as Error).message;
        // Redis restarted empty: the group is gone; recreate it and carry on.
        if (/NOGROUP/.test(msg)) await this.ensureGroup().catch(() => undefined);
        else this.cx.log.warn({ err: msg }, 'reading node events failed; retrying');
        cursor = '0';
        await sleep(200);
      }
    }
    await this.writer;
  }

  /**
   * Entries delivered to another consumer and never acknowledged (a control plane that crashed, or
   * restarted under another pid) are taken over once idle for `abandonedEventsAfterMs` (checked as
   * often), then read again like this recorder's own pending entries.
   */
  private async claimAbandoned(): Promise<void> {
    const idleMs = this.cx.settings.abandonedEventsAfterMs;
    this.nextClaimAt = Date.now() + idleMs;
    let start = '0-0';
    for (let i = 0; i < 100; i++) {
      const [next, claimed] = (await this.cx.redis.xautoclaim(this.cx.keys.events, GROUP, this.consumer, idleMs, start, 'COUNT', 500, 'JUSTID')) as [string, string[]];
      if (claimed.length) this.rereadPending = true;
      if (next === '0-0') break;
      start = next;
    }
  }

  private startWriter(): void {
    if (this.writing) return;
    this.writing = true;
    this.writer = (async () => {
      try {
        while (this.buffered.ids.length) {
          const batch = this.buffered;
          this.buffered = { ids: [], events: [] };
          try {
            await this.handleBatch(batch.events);
          } catch (err) {
            // Retried before anything read after it, so each job's events stay in order.
            this.buffered = { ids: [...batch.ids, ...this.buffered.ids], events: [...batch.events, ...this.buffered.events] };
            this.cx.log.warn({ err: (err as Error).message, events: batch.events.length }, 'recording node events failed; retrying');
            if (!this.running) return; // still pending in the stream: read again after a restart
            await sleep(200);
            continue;
          }
          await this.cx.redis.pipeline().xack(this.cx.keys.events, GROUP, ...batch.ids).xdel(this.cx.keys.events, ...batch.ids).exec()
            .catch((err: Error) => {
              this.cx.log.warn({ err: err.message }, 'acknowledging node events failed; they are read again');
              this.rereadPending = true;
            });
        }
      } finally {
        this.writing = false;
      }
    })();
  }

  /**
   * Exposed for tests: feed events as if they came off the stream (e.g. a duplicate completion).
   * Per job, events keep their order: starts, then progress, then ends (a node emits them in that
   * order for one attempt, and a stale attempt's end is recognised by its number, not its position).
   * A start whose end is in the same batch is not written on its own: the end's statement records
   * both (short jobs then cost one write, not two).
   */
  async handleBatch(events: NodeEvent[]): Promise<void> {
    const ends = dedupe(events.filter((e): e is Extract<NodeEvent, { type: 'ended' }> => e.type === 'ended'));
    const ending = new Set(ends.map((e) => `${e.jobId}:${e.attempt}`));
    const starts = events.filter((e): e is Extract<NodeEvent, { type: 'started' }> => e.type === 'started' && !ending.has(`${e.jobId}:${e.attempt}`));
    if (starts.length) await this.started(dedupe(starts));
    for (const e of events) if (e.type === 'progress' && !ending.has(`${e.jobId}:${e.attempt}`)) await this.progress(e);
    for (let i = 0; i < ends.length; i += 500) await this.ended(ends.slice(i, i + 500));
  }

  private async started(starts: Array<Extract<NodeEvent, { type: 'started' }>>): Promise<void> {
    const rows = await relaxedRun<AnnounceRow>(this.cx, STARTED, [starts.map((e) => e.jobId), starts.map((e) => e.attempt), starts.map((e) => e.at), starts.map((e) => e.node)],
    );
    await this.announcer.announceMany(rows, 'STARTED');
  }

  private async progress(e: Extract<NodeEvent, { type: 'progress' }>): Promise<void> {
    const rows = await relaxedRun<AnnounceRow>(this.cx, PROGRESS, [e.jobId, e.attempt, e.progress ?? null, e.logs ?? []],
    );
    if (rows[0]) await this.announcer.announce(rows[0], 'PROGRESS');
  }

  /**
   * Ends of attempts, in one durable statement: one ledger row per (job, attempt) and the job's
   * terminal state commit together or not at all. An attempt that is no longer the job's current
   * one (preempted, given up as lost) is recorded but not billed, and its result is discarded.
   * The devices are given back to the admitter first: the node has finished with them whether or
   * not this write has committed yet.
   */
  private async ended(ends: Array<Extract<NodeEvent, { type: 'ended' }>>): Promise<void> {
    for (const e of ends) this.scheduler.attemptEnded(e.jobId, e.attempt);
    const col = <T>(f: (e: (typeof ends)[number]) => T) => ends.map(f);
    const rows = await durableRun<EndedRow>(this.cx, ENDED, [
      col((e) => e.jobId), col((e) => e.attempt), col((e) => e.status), col((e) => JSON.stringify(e.output ?? null)),
      col((e) => (e.error ? JSON.stringify(e.error) : null)), col((e) => e.startedAt), col((e) => e.endedAt),
      col((e) => JSON.stringify(e.metrics ?? {})), col((e) => e.devices), col((e) => e.node),
      col((e) => (e.startedAt === null ? 0 : billableMs(e))), this.cx.settings.dataRetentionSeconds,
    ]);
    const announce: AnnounceRow[] = rows.map((r) => ({
      id: r.id, tenant_id: r.tenant_id, kind: r.kind, parent_id: r.parent_id, service: r.service, status: r.status,
      webhook_url: r.webhook_url, webhook_events: r.webhook_events, hardware: r.hardware, progress: r.progress,
      view: Object.fromEntries([...VIEW_COLUMNS.map((c) => [c, r[c]]), ['billable_ms', r.billable_ms]]), replayed: r.replayed,
    }));
    // Started and ended in one batch: nobody saw it RUNNING, but a STARTED webhook is still owed.
    const unseenStarts = announce.filter((_, i) => rows[i].prev_status === 'ADMITTED' && rows[i].started_at !== null);
    if (unseenStarts.length) await this.announcer.announceMany(unseenStarts, 'STARTED', { publish: false });
    await this.announcer.announceMany(announce);
  }
}

type EndedRow = AnnounceRow & Record<(typeof VIEW_COLUMNS)[number], any> & { billable_ms: string; prev_status: string; replayed: boolean };

const ENDED_COLUMNS = [...new Set([...ANNOUNCE_COLUMNS.split(', '), ...VIEW_COLUMNS])].map((c) => `j.${c}`).join(', ');

/**
 * One statement, so one atomic, durable commit: the ledger rows (unique per job × attempt, so a
 * replayed end inserts nothing) and the jobs' terminal states (guarded by attempt and status, so a
 * replayed or stale end changes nothing). `locked` takes the jobs' row locks, in id order, before
 * anything is written (`e` yields no row until `locked` is complete), the order every other writer
 * of jobs + ledger uses: no deadlock. A locking read returns each row as last committed, also when
 * it had to wait for another writer (a preemption, a node given up as lost), so `billable` and
 * `replayed` judge the job from `l`, never from the statement's snapshot (`j`, which may predate
 * such a writer; it serves only columns no writer changes). An attempt the control plane took
 * back (preempted, given up as lost) has its non-billable row already (recordTakenBackAttempts):
 * its late end inserts nothing. Otherwise the end of the job's current attempt is billable unless
 * the job is QUEUED (taken back by a writer that left no row); any other attempt's is not.
 * `billable_ms` adds the rows inserted here to those committed before. `o` is the row before the
 * update (for the STARTED webhook of a folded start). `replayed` returns, unchanged, the jobs
 * this very end (same attempt, status and end time) has ended before: an end read again after a
 * failure between its commit and its announcement (a crash, Redis or Postgres failing under the
 * webhook enqueue) is announced again, so its waiters, webhook and hooks are not lost; the
 * webhook's id is the same, so it is not sent twice while BullMQ still holds it, and receivers
 * deduplicate by it in any case (Standard Webhooks). `l` is the row before this statement's own
 * update, so a job ended here is never also `replayed`.
 */
export const ENDED = statement('recorder.ended', `
  WITH locked AS MATERIALIZED (
    SELECT id, attempt, status, completed_at FROM jobs WHERE id = ANY($1::uuid[]) ORDER BY id FOR UPDATE
  ), e AS (
    SELECT e.* FROM unnest($1::uuid[], $2::int[], $3::text[], $4::jsonb[], $5::jsonb[], $6::float8[], $7::float8[], $8::jsonb[], $9::int[], $10::text[], $11::bigint[])
      AS e(job_id, attempt, status, output, error, started, ended, metrics, devices, node, ms)
     WHERE (SELECT count(*) FROM locked) >= 0
  ), ledger AS (
    INSERT INTO usage_ledger (tenant_id, job_id, attempt, job_kind, service, hardware, devices, node_id, started_at, ended_at, billable_ms, billable, reason)
    SELECT j.tenant_id, j.id, e.attempt, j.kind, j.service, j.hardware, e.devices, e.node, to_timestamp(e.started / 1000.0), to_timestamp(e.ended / 1000.0),
           e.ms, (l.attempt = e.attempt AND l.status <> 'QUEUED'), CASE WHEN l.attempt = e.attempt AND l.status <> 'QUEUED' THEN NULL ELSE 'STALE_ATTEMPT' END
      FROM e JOIN locked l ON l.id = e.job_id JOIN jobs j ON j.id = e.job_id
     WHERE e.started IS NOT NULL
    ON CONFLICT (job_id, attempt) DO NOTHING
    RETURNING job_id, billable_ms, billable
  ), upd AS (
    UPDATE jobs j SET status = e.status, output = e.output, error = e.error, completed_at = to_timestamp(e.ended / 1000.0),
           started_at = COALESCE(j.started_at, to_timestamp(e.started / 1000.0)),
           progress = CASE WHEN e.status = 'SUCCEEDED' THEN 1 ELSE j.progress END, metrics = j.metrics || e.metrics,
           data_expires_at = now() + make_interval(secs => $12)
      FROM e, jobs o
     WHERE j.id = e.job_id AND o.id = j.id AND j.attempt = e.attempt AND j.status || '' IN ('ADMITTED','RUNNING')
    RETURNING ${ENDED_COLUMNS}, o.status AS prev_status, false AS replayed
  ), replayed AS (
    SELECT ${ENDED_COLUMNS}, j.status AS prev_status, true AS replayed
      FROM e JOIN locked l ON l.id = e.job_id JOIN jobs j ON j.id = e.job_id
     WHERE l.attempt = e.attempt AND l.status IN ('SUCCEEDED','FAILED','CANCELED') AND l.status = e.status
       AND l.completed_at = to_timestamp(e.ended / 1000.0)
  )
  SELECT upd.*, (COALESCE((SELECT sum(u.billable_ms) FROM usage_ledger u WHERE u.job_id = upd.id AND u.billable), 0)
               + COALESCE((SELECT sum(l.billable_ms) FROM ledger l WHERE l.job_id = upd.id AND l.billable), 0))::bigint AS billable_ms
    FROM upd
  UNION ALL
  SELECT r.*, COALESCE((SELECT sum(u.billable_ms) FROM usage_ledger u WHERE u.job_id = r.id AND u.billable), 0)::bigint
    FROM replayed r`);

// Status guards as filters, not index conditions: see scheduler.ts (ADMIT).
export const STARTED = statement('recorder.started', `
  UPDATE jobs j SET status = 'RUNNING', started_at = to_timestamp(e.at / 1000.0), node_id = e.node
    FROM unnest($1::uuid[], $2::int[], $3::float8[], $4::text[]) AS e(job_id, attempt, at, node)
   WHERE j.id = e.job_id AND j.attempt = e.attempt AND j.status || '' = 'ADMITTED'
  RETURNING ${ANNOUNCE_COLUMNS.split(', ').map((c) => `j.${c}`).join(', ')}`);

export const PROGRESS = statement('recorder.progress', `
  UPDATE jobs SET progress = COALESCE($3, progress),
         logs = (SELECT COALESCE(array_agg(l ORDER BY n), '{}') FROM (
           SELECT l, n FROM unnest(logs || $4::text[]) WITH ORDINALITY AS t(l, n) ORDER BY n DESC LIMIT ${MAX_LOG_LINES}) s)
   WHERE id = $1 AND attempt = $2 AND status || '' = 'RUNNING'
  RETURNING ${ANNOUNCE_COLUMNS}`);

/** Devices × wall time, rounded up to the millisecond: an attempt that ran is never free. */
export function billableMs(e: { devices: number; startedAt: number | null; endedAt: number; durationMs?: number }): number {
  const wall = e.durationMs ?? Math.max(0, e.endedAt - (e.startedAt ?? e.endedAt));
  return e.devices * Math.max(1, Math.ceil(wall));
}

/** The first event per (job, attempt): a redelivered duplicate in the same batch changes nothing. */
function dedupe<E extends { jobId: string; attempt: number }>(events: E[]): E[] {
  const seen = new Set<string>();
  return events.filter((e) => {
    const k = `${e.jobId}:${e.attempt}`;
    if (seen.has(k)) return false;
    seen.add(k);
    return true;
  });
}
