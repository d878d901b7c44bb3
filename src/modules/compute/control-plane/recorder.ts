import type { NodeEvent } from '../../../platform/queue/messages';
import { relaxedQuery, type ControlPlaneContext } from './context';
import type { Scheduler } from './scheduler';
import { ANNOUNCE_COLUMNS, type Announcer, type AnnounceRow } from './announcer';

const GROUP = 'control-plane';
const MAX_LOG_LINES = 200;


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

  private async run(): Promise<void> {
    // First our own pending (delivered, unacknowledged) messages from before a crash, then new ones.
    let cursor = '0';
    while (this.running && this.reader) {
      try {
        const res = (await this.reader.xreadgroup(
          'GROUP', GROUP, this.consumer, 'COUNT', 200, 'BLOCK', 1000, 'STREAMS', this.cx.keys.events, cursor,
        )) as Array<[string, Array<[string, string[] | null]>]> | null;
        const entries = res?.[0]?.[1] ?? [];
        if (cursor === '0' && entries.length === 0) cursor = '>';
        if (entries.length === 0) continue;
        const ids: string[] = [];
        const events: NodeEvent[] = [];
        for (const [id, fields] of entries) {
          ids.push(id);
          if (fields) events.push(JSON.parse(fields[1]) as NodeEvent);
        }
        await this.handleBatch(events);
        await this.cx.redis.pipeline().xack(this.cx.keys.events, GROUP, ...ids).xdel(this.cx.keys.events, ...ids).exec();
      } catch (err) {
        if (!this.running) return;
        const msg = (err as Error).message;
        // Redis restarted empty: the group is gone; recreate it and carry on.
        if (/NOGROUP/.test(msg)) await this.ensureGroup().catch(() => undefined);
        else this.cx.log.warn({ err: msg }, 'recording node events failed; retrying');
        cursor = '0';
        await new Promise((r) => setTimeout(r, 200));
      }
    }
  }

  /**
   * Exposed for tests: feed events as if they came off the stream (e.g. a duplicate completion).
   * Per job, events keep their order: starts, then progress, then ends (a node emits them in that
   * order for one attempt, and a stale attempt's end is recognised by its number, not its position).
   */
  async handleBatch(events: NodeEvent[]): Promise<void> {
    const starts = events.filter((e): e is Extract<NodeEvent, { type: 'started' }> => e.type === 'started');
    if (starts.length) await this.started(dedupe(starts));
    for (const e of events) if (e.type === 'progress') await this.progress(e);
    const ends = events.filter((e): e is Extract<NodeEvent, { type: 'ended' }> => e.type === 'ended');
    for (let i = 0; i < ends.length; i += 500) await this.ended(dedupe(ends.slice(i, i + 500)));
  }

  private async started(starts: Array<Extract<NodeEvent, { type: 'started' }>>): Promise<void> {
    const [rows]: [AnnounceRow[], number] = await relaxedQuery(this.cx.db,
      `UPDATE jobs j SET status = 'RUNNING', started_at = to_timestamp(e.at / 1000.0), node_id = e.node
         FROM unnest($1::uuid[], $2::int[], $3::float8[], $4::text[]) AS e(job_id, attempt, at, node)
        WHERE j.id = e.job_id AND j.attempt = e.attempt AND j.status = 'ADMITTED'
        RETURNING ${ANNOUNCE_COLUMNS.split(', ').map((c) => `j.${c}`).join(', ')}`,
      [starts.map((e) => e.jobId), starts.map((e) => e.attempt), starts.map((e) => e.at), starts.map((e) => e.node)],
    );
    await this.announcer.announceMany(rows, 'STARTED');
  }

  private async progress(e: Extract<NodeEvent, { type: 'progress' }>): Promise<void> {
    const [rows]: [AnnounceRow[], number] = await relaxedQuery(this.cx.db,
      `UPDATE jobs SET progress = COALESCE($3, progress),
              logs = (SELECT COALESCE(array_agg(l ORDER BY n), '{}') FROM (
                SELECT l, n FROM unnest(logs || $4::text[]) WITH ORDINALITY AS t(l, n) ORDER BY n DESC LIMIT ${MAX_LOG_LINES}) s)
        WHERE id = $1 AND attempt = $2 AND status = 'RUNNING'
        RETURNING ${ANNOUNCE_COLUMNS}`,
      [e.jobId, e.attempt, e.progress ?? null, e.logs ?? []],
    );
    if (rows[0]) await this.announcer.announce(rows[0], 'PROGRESS');
  }

  /**
   * Ends of attempts, in one transaction: one ledger row per (job, attempt) and the job's terminal
   * state. An attempt that is no longer the job's current one (preempted, given up as lost) is
   * recorded but not billed, and its result is discarded.
   */
  private async ended(ends: Array<Extract<NodeEvent, { type: 'ended' }>>): Promise<void> {
    const col = <T>(f: (e: (typeof ends)[number]) => T) => ends.map(f);
    const updated = await this.cx.db.transaction(async (m) => {
      const started = ends.filter((e) => e.startedAt !== null);
      if (started.length) {
        await m.query(
          `INSERT INTO usage_ledger (tenant_id, job_id, attempt, job_kind, service, hardware, devices, node_id, started_at, ended_at, billable_ms, billable, reason)
           SELECT j.tenant_id, j.id, e.attempt, j.kind, j.service, j.hardware, e.devices, e.node, to_timestamp(e.started / 1000.0), to_timestamp(e.ended / 1000.0),
                  e.ms, (j.attempt = e.attempt AND j.status <> 'QUEUED'), CASE WHEN j.attempt = e.attempt AND j.status <> 'QUEUED' THEN NULL ELSE 'STALE_ATTEMPT' END
             FROM unnest($1::uuid[], $2::int[], $3::int[], $4::text[], $5::float8[], $6::float8[], $7::bigint[]) AS e(job_id, attempt, devices, node, started, ended, ms)
             JOIN jobs j ON j.id = e.job_id
           ON CONFLICT (job_id, attempt) DO NOTHING`,
          [started.map((e) => e.jobId), started.map((e) => e.attempt), started.map((e) => e.devices), started.map((e) => e.node),
            started.map((e) => e.startedAt), started.map((e) => e.endedAt), started.map(billableMs)],
        );
      }
      const [rows]: [AnnounceRow[], number] = await m.query(
        `UPDATE jobs j SET status = e.status, output = e.output, error = e.error, completed_at = to_timestamp(e.ended / 1000.0),
                progress = CASE WHEN e.status = 'SUCCEEDED' THEN 1 ELSE j.progress END, metrics = j.metrics || e.metrics,
                data_expires_at = now() + make_interval(secs => $8)
           FROM unnest($1::uuid[], $2::int[], $3::text[], $4::jsonb[], $5::jsonb[], $6::float8[], $7::jsonb[]) AS e(job_id, attempt, status, output, error, ended, metrics)
          WHERE j.id = e.job_id AND j.attempt = e.attempt AND j.status IN ('ADMITTED','RUNNING')
          RETURNING ${ANNOUNCE_COLUMNS.split(', ').map((c) => `j.${c}`).join(', ')}`,
        [col((e) => e.jobId), col((e) => e.attempt), col((e) => e.status), col((e) => JSON.stringify(e.output ?? null)),
          col((e) => (e.error ? JSON.stringify(e.error) : null)), col((e) => e.endedAt), col((e) => JSON.stringify(e.metrics ?? {})),
          this.cx.settings.dataRetentionSeconds],
      );
      return rows;
    });
    for (const e of ends) this.scheduler.attemptEnded(e.jobId, e.attempt);
    await this.announcer.announceMany(updated);
  }
}

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
