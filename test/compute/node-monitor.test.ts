import { Redis } from 'ioredis';
import { keys, type NodeInfo } from '../../src/platform/queue/messages';
import { NodeAgent } from '../../workers/node-agent/agent';
import { startCluster, waitFor, type TestCluster } from '../support/cluster';

/** The node monitor and node agents' registration, against fake and in-process agents. */

describe('node management (control plane)', () => {
  let cluster: TestCluster;
  let redis: Redis;
  let k: ReturnType<typeof keys>;
  const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

  beforeAll(async () => {
    cluster = await startCluster({ agents: [] });
    redis = new Redis(cluster.api.env.REDIS_URL);
    k = keys(cluster.api.env.REDIS_PREFIX);
  });
  afterAll(async () => {
    redis?.disconnect();
    await cluster?.close();
  });

  /** A node registration written as an agent writes it; `clockSkewMs` shifts the node's own clock. */
  function fakeNode(name: string, clockSkewMs = 0) {
    const startedAt = Date.now() + clockSkewMs;
    const beat = async () => {
      const info: NodeInfo = { name, hardware: 'CPU', devices: 1, gpuModel: null, startedAt, running: [], beatAt: Date.now() + clockSkewMs };
      await redis.multi().sadd(k.nodeSet, name).set(k.node(name), JSON.stringify(info)).set(k.heartbeat(name), '1', 'PX', 4000).exec();
    };
    let timer: NodeJS.Timeout | null = null;
    return {
      async start() {
        await beat();
        timer = setInterval(() => void beat(), 1000);
      },
      stop() {
        if (timer) clearInterval(timer);
      },
      /** Its registration gone from Redis (a Redis restarted empty), and the node dead meanwhile. */
      async vanish() {
        this.stop();
        await redis.multi().srem(k.nodeSet, name).del(k.node(name)).del(k.heartbeat(name)).exec();
      },
    };
  }

  it('a node whose first Postgres write fails is added to the admitter once a later tick succeeds', async () => {
    const db = (cluster.cp.monitor as any).cx.db;
    const original = db.query;
    let failed = false;
    db.query = function (this: unknown, sql: string, ...rest: unknown[]) {
      if (!failed && typeof sql === 'string' && sql.includes('INSERT INTO nodes')) {
        failed = true;
        return Promise.reject(new Error('Connection terminated unexpectedly'));
      }
      return original.call(this, sql, ...rest);
    };
    const node = fakeNode('audit-upsert');
    const control = fakeNode('audit-upsert-ok');
    try {
      await node.start();
      await waitFor(() => failed, 5000, 'the upsert to fail once');
      await waitFor(() => cluster.cp.monitor.nodeInfo('audit-upsert') !== null, 5000, 'the monitor to know the node');
      await sleep(2500); // several ticks with Postgres healthy again
      const admitterNodes: Map<string, unknown> = (cluster.cp.scheduler as any).admitter.nodes;
      // Control: a node registered with Postgres healthy throughout is added.
      await control.start();
      await waitFor(() => admitterNodes.has('audit-upsert-ok'), 5000, 'the control node to be added');
      expect(admitterNodes.has('audit-upsert')).toBe(true);
    } finally {
      db.query = original;
      await node.vanish();
      await control.vanish();
    }
  });

  it('a node whose registration vanished is marked lost after the grace by the control plane\'s clock, though the node\'s runs an hour ahead', async () => {
    const node = fakeNode('audit-skew', 60 * 60_000); // the node's clock runs 1 h ahead
    const control = fakeNode('audit-noskew');
    await node.start();
    await control.start();
    await waitFor(() => cluster.cp.monitor.nodeInfo('audit-skew') !== null && cluster.cp.monitor.nodeInfo('audit-noskew') !== null, 5000, 'the monitor to know the nodes');
    await node.vanish();
    await control.vanish();
    // Control: the node with a correct clock is given up once its heartbeat would have lapsed.
    await waitFor(() => cluster.cp.monitor.nodeInfo('audit-noskew') === null, 8000, 'the control node to be marked lost');
    // The grace for an unregistered node is "until its heartbeat would have lapsed" (4 s), measured
    // as control-plane now − node beatAt: negative for a node clock ahead, so the grace never ends.
    let lost = false;
    try {
      await waitFor(() => cluster.cp.monitor.nodeInfo('audit-skew') === null, 8000, 'the node to be marked lost');
      lost = true;
    } catch {
      /* stays known: its jobs stay RUNNING, its devices held */
    }
    expect(lost).toBe(true);
  });

  it('a second node agent with a name already running is refused, and the first\'s registration does not flap ("node restarted")', async () => {
    const runtimes = { async run() { return { output: {}, metrics: {} }; }, async warm() {}, async close() {} };
    const opts = { name: 'audit-dup', hardware: 'CPU' as const, devices: 1, redisUrl: cluster.api.env.REDIS_URL, prefix: cluster.api.env.REDIS_PREFIX, runtimes: runtimes as any };
    const monitor = cluster.cp.monitor as any;
    const originalLost = monitor.lost.bind(monitor);
    const restarts: string[] = [];
    monitor.lost = (name: string, why: string, deregister?: boolean) => {
      if (name === 'audit-dup' && why === 'node restarted') restarts.push(why);
      return originalLost(name, why, deregister);
    };
    const first = new NodeAgent(opts);
    await first.start();
    await waitFor(() => cluster.cp.monitor.nodeInfo('audit-dup') !== null, 5000, 'the first agent to register');
    await sleep(300); // different startedAt, and heartbeats out of phase
    const second = new NodeAgent(opts);
    let secondRefused = false;
    try {
      await second.start();
    } catch {
      secondRefused = true;
    }
    try {
      await sleep(6000);
      // Either the second agent is refused, or the monitor keeps one registration: never this flapping,
      // which gives up every attempt on the node ("node restarted", NODE_LOST) each time it flips.
      expect({ secondRefused, restarts: restarts.length }).toEqual({ secondRefused: true, restarts: 0 });
      expect(cluster.cp.monitor.nodeInfo('audit-dup')).not.toBeNull();
    } finally {
      monitor.lost = originalLost;
      await first.stop();
      if (!secondRefused) await second.stop();
    }
  });
});
