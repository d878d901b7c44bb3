import { HEARTBEAT_TTL_MS, STOPPED_MARKER_SECONDS, type NodeInfo } from '../../../platform/queue/messages';
import { ANNOUNCE_COLUMNS, type Announcer, type AnnounceRow } from './announcer';
import type { ControlPlaneContext } from './context';
import type { Scheduler } from './scheduler';
import { recordTakenBackAttempts } from './superseded';

interface Known {
  /** The node's last registration, its `beatAt` replaced by when this monitor first saw that beat (its own clock). */
  info: NodeInfo;
  /** That beat's own `beatAt`, by the node's clock: a new value is a new beat. */
  nodeBeatAt: number;
}

/**
 * A registration as the monitor keeps it: every time here is the control plane's, never the
 * node's (a node clock running ahead made a vanished node's grace never end; one behind skipped it).
 */
function seen(info: NodeInfo, prev: Known | undefined): Known {
  const sameBeat = prev !== undefined && prev.nodeBeatAt === info.beatAt;
  return { info: { ...info, beatAt: sameBeat ? prev.info.beatAt : Date.now() }, nodeBeatAt: info.beatAt };
}

/**
 * Watches node agents' registrations and heartbeats in Redis. A node whose heartbeat lapses is
 * LOST: its running attempts are recorded as non-billable platform faults and its jobs go back
 * to the queue with the next attempt, or end FAILED once they have used all their attempts.
 */
export class NodeMonitor {
  private readonly known = new Map<string, Known>();
  private timer: NodeJS.Timeout | null = null;
  private busy = false;

  constructor(private readonly cx: ControlPlaneContext, private readonly scheduler: Scheduler, private readonly announcer: Announcer) {}

  /** Reads the live nodes once (for the scheduler's initial state), then polls. */
  async start(): Promise<Array<{ id: string; hardware: 'CPU' | 'GPU'; totalDevices: number }>> {
    const { live } = await this.liveNodes();
    for (const info of live) {
      await this.upsert(info);
      this.known.set(info.name, seen(info, undefined));
    }
    await this.markMissingLost(new Set(live.map((n) => n.name)));
    this.timer = setInterval(() => void this.tick(), 500);
    return live.map((n) => ({ id: n.name, hardware: n.hardware, totalDevices: n.devices }));
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
  }

  knownNodes(): NodeInfo[] {
    return [...this.known.values()].map((k) => k.info);
  }

  /** The node's last heartbeat as seen by the monitor (null if it is not live). */
  nodeInfo(node: string): NodeInfo | null {
    return this.known.get(node)?.info ?? null;
  }

  private async tick(): Promise<void> {
    if (this.busy) return;
    this.busy = true;
    try {
      const { live, registered } = await this.liveNodes();
      const liveNames = new Set(live.map((n) => n.name));
      for (const info of live) {
        const prev = this.known.get(info.name);
        if (prev && prev.info.startedAt !== info.startedAt) await this.lost(info.name, 'node restarted', false);
        if (!prev || prev.info.startedAt !== info.startedAt) {
          // Known only once Postgres and the admitter have it: a failed write is tried again next tick.
          await this.upsert(info);
          this.scheduler.addNode({ id: info.name, hardware: info.hardware, totalDevices: info.devices });
          this.known.set(info.name, seen(info, undefined));
          this.cx.log.info({ node: info.name, hardware: info.hardware, devices: info.devices }, 'node ready');
        } else {
          this.known.set(info.name, seen(info, prev));
          await this.cx.db.query(`UPDATE nodes SET last_heartbeat_at = now() WHERE id = $1`, [info.name]);
        }
      }
      for (const [name, k] of [...this.known]) {
        if (liveNames.has(name)) continue;
        // Not even registered (Redis restarted empty, say) while its last beat is recent: the node
        // will register again within a beat, so give it until its heartbeat would have lapsed.
        if (!registered.has(name) && Date.now() - k.info.beatAt < HEARTBEAT_TTL_MS) continue;
        await this.lost(name, 'heartbeat missed');
      }
    } catch (err) {
      this.cx.log.warn({ err: (err as Error).message }, 'node monitor tick failed');
    } finally {
      this.busy = false;
    }
  }

  private async liveNodes(): Promise<{ live: NodeInfo[]; registered: Set<string> }> {
    const { redis, keys } = this.cx;
    const names = await redis.smembers(keys.nodeSet);
    if (names.length === 0) return { live: [], registered: new Set() };
    const pipe = redis.pipeline();
    for (const n of names) pipe.get(keys.node(n)).exists(keys.heartbeat(n));
    const res = (await pipe.exec()) ?? [];
    const out: NodeInfo[] = [];
    names.forEach((_, i) => {
      const info = res[2 * i]?.[1] as string | null;
      const alive = res[2 * i + 1]?.[1] === 1;
      if (info && alive) out.push(JSON.parse(info) as NodeInfo);
    });
    return { live: out, registered: new Set(names) };
  }

  private async upsert(info: NodeInfo): Promise<void> {
    await this.cx.db.query(
      `INSERT INTO nodes (id, hardware, devices, gpu_model, status, last_heartbeat_at) VALUES ($1, $2, $3, $4, 'READY', now())
       ON CONFLICT (id) DO UPDATE SET hardware = $2, devices = $3, gpu_model = $4, status = 'READY', last_heartbeat_at = now()`,
      [info.name, info.hardware, info.devices, info.gpuModel],
    );
  }

  /** Nodes Postgres believes READY but that are not alive now (the control plane was down when they died). */
  private async markMissingLost(live: Set<string>): Promise<void> {
    const rows: Array<{ id: string }> = await this.cx.db.query(`SELECT id FROM nodes WHERE status = 'READY'`);
    for (const r of rows) if (!live.has(r.id)) await this.lost(r.id, 'not alive at control-plane start');
  }

  /**
   * `deregister`: drop its Redis registration too (not when a new incarnation already holds it).
   * The node is forgotten only once its jobs are requeued in Postgres: if that fails (Postgres
   * unreachable a moment), the next tick finds it still missing and tries again. Forgotten first,
   * its jobs would stay RUNNING on a node nothing watches any more, until a control-plane restart.
   */
  async lost(name: string, why: string, deregister = true): Promise<void> {
    const rows = await this.abandonAttempts(`node_id = $1`, [name], 'NODE_LOST', `node ${name} lost (${why})`);
    await this.cx.db.query(`UPDATE nodes SET status = 'LOST' WHERE id = $1`, [name]);
    this.known.delete(name);
    this.scheduler.removeNode(name);
    if (deregister) await this.cx.redis.multi().srem(this.cx.keys.nodeSet, name).del(this.cx.keys.node(name)).exec();
    for (const r of rows) if (r.status !== 'QUEUED') this.scheduler.dequeue(r.id);
    this.cx.log.warn({ node: name, why, jobs: rows.map((r) => r.id) }, 'node lost; its jobs were requeued');
  }

  /**
   * Gives up the current attempt of matching ADMITTED/RUNNING jobs: a non-billable ledger row for
   * the attempt (recordTakenBackAttempts), then back to QUEUED, or FAILED after max_attempts
   * platform faults.
   */
  async abandonAttempts(where: string, params: unknown[], code: string, message: string): Promise<AnnounceRow[]> {
    const rows = await this.cx.db.transaction(async (m) => {
      const n = params.length;
      await recordTakenBackAttempts(m, where, params, code);
      return (await m.query(
        `UPDATE jobs SET node_id = NULL, borrowed = false, progress = 0,
                status = CASE WHEN attempt >= max_attempts THEN 'FAILED' ELSE 'QUEUED' END,
                error = CASE WHEN attempt >= max_attempts THEN jsonb_build_object('code', $${n + 1}::text, 'message', $${n + 2}::text || ' after ' || attempt || ' attempts') END,
                completed_at = CASE WHEN attempt >= max_attempts THEN now() END
          WHERE ${where} AND status IN ('ADMITTED','RUNNING')
          RETURNING ${ANNOUNCE_COLUMNS}, attempt`,
        [...params, code, message],
      ))[0] as Array<AnnounceRow & { attempt: number }>;
    });
    // A node taken for lost may be alive (stalled, cut off from Redis a while): when it is back, it
    // stops these attempts at its next heartbeat instead of running them on for nothing.
    if (rows.length) {
      const pipe = this.cx.redis.pipeline();
      for (const r of rows) pipe.set(this.cx.keys.stopped(r.id, r.attempt), code, 'EX', STOPPED_MARKER_SECONDS);
      await pipe.exec().catch((err: Error) => this.cx.log.warn({ err: err.message }, 'marking abandoned attempts stopped failed'));
    }
    for (const r of rows) await this.announcer.announce(r);
    return rows;
  }
}
