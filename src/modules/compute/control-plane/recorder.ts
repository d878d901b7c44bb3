import type { NodeEvent } from '../../../platform/queue/messages';
import type { ControlPlaneContext } from './context';
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
        await this.cx.redis.xack(this.cx.keys.events, GROUP, ...ids);
        await this.cx.redis.xdel(this.cx.keys.events, ...ids);
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

  /** Exposed for tests: feed events as if they came off the stream (e.g. a duplicate completion). */
  async handleBatch(events: NodeEvent[]): Promise<void> {
    for (const e of events) {
      if (e.type === 'started') await this.started(e);
      else if (e.type === 'progress') await this.progress(e);
      else await this.ended(e);
    }
  }

  private async started(e: Extract<NodeEvent, { type: 'started' }>): Promise<void> {
    const rows: AnnounceRow[] = (await this.cx.db.query(
      `UPDATE jobs SET status = 'RUNNING', started_at = to_timestamp($3 / 1000.0), node_id = $4
        WHERE id = $1 AND attempt = $2 AND status = 'ADMITTED'
        RETURNING ${ANNOUNCE_COLUMNS}`,
      [e.jobId, e.attempt, e.at, e.node],
    ))[0];
    if (rows[0]) await this.announcer.announce(rows[0], 'STARTED');
  }

  private async progress(e: Extract<NodeEvent, { type: 'progress' }>): Promise<void> {
    const rows: Array<AnnounceRow> = (await this.cx.db.query(
      `UPDATE jobs SET progress = COALESCE($3, progress),
              logs = (SELECT COALESCE(array_agg(l ORDER BY n), '{}') FROM (
                SELECT l, n FROM unnest(logs || $4::text[]) WITH ORDINALITY AS t(l, n) ORDER BY n DESC LIMIT ${MAX_LOG_LINES}) s)
        WHERE id = $1 AND attempt = $2 AND status = 'RUNNING'
        RETURNING ${ANNOUNCE_COLUMNS}`,
      [e.jobId, e.attempt, e.progress ?? null, e.logs ?? []],
    ))[0];
    if (rows[0]) await this.announcer.announce(rows[0], 'PROGRESS');
  }

  /**
   * The end of an attempt: one ledger row per (job, attempt) and the job's terminal state, in one
   * transaction. An attempt that is no longer the job's current one (preempted, given up as lost)
   * is recorded but not billed, and its result is discarded.
   */
  private async ended(e: Extract<NodeEvent, { type: 'ended' }>): Promise<void> {
    const updated = await this.cx.db.transaction(async (m) => {
      if (e.startedAt !== null) {
        await m.query(
          `INSERT INTO usage_ledger (tenant_id, job_id, attempt, job_kind, service, hardware, devices, node_id, started_at, ended_at, billable_ms, billable, reason)
           SELECT tenant_id, id, $2, kind, service, hardware, $3, $4, to_timestamp($5 / 1000.0), to_timestamp($6 / 1000.0), $7,
                  (attempt = $2 AND status <> 'QUEUED'), CASE WHEN attempt = $2 AND status <> 'QUEUED' THEN NULL ELSE 'STALE_ATTEMPT' END
             FROM jobs WHERE id = $1
           ON CONFLICT (job_id, attempt) DO NOTHING`,
          [e.jobId, e.attempt, e.devices, e.node, e.startedAt, e.endedAt, e.devices * Math.max(0, e.endedAt - e.startedAt)],
        );
      }
      const [rows]: [AnnounceRow[], number] = await m.query(
        `UPDATE jobs SET status = $3, output = $4::jsonb, error = $5::jsonb, completed_at = to_timestamp($6 / 1000.0),
                progress = CASE WHEN $3 = 'SUCCEEDED' THEN 1 ELSE progress END, metrics = metrics || $7::jsonb,
                data_expires_at = now() + make_interval(secs => $8)
          WHERE id = $1 AND attempt = $2 AND status IN ('ADMITTED','RUNNING')
          RETURNING ${ANNOUNCE_COLUMNS}`,
        [e.jobId, e.attempt, e.status, JSON.stringify(e.output ?? null), e.error ? JSON.stringify(e.error) : null, e.endedAt, JSON.stringify(e.metrics ?? {}), this.cx.settings.dataRetentionSeconds],
      );
      return rows[0];
    });
    this.scheduler.attemptEnded(e.jobId, e.attempt);
    if (updated) await this.announcer.announce(updated);
  }
}
