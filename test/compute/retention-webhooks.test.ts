import { Queue } from 'bullmq';
import type { Client } from 'pg';
import { bullPrefix, terminalWebhookId, WEBHOOK_QUEUE } from '../../src/platform/queue/messages';
import { signUpTenant, type TestTenant } from '../support/api';
import { startCluster, waitFor, type TestCluster } from '../support/cluster';
import { ownerClient } from '../support/db';
import { startWebhookReceiver, type WebhookReceiver } from '../support/receiver';

/**
 * Data retention and webhook bookkeeping: trials of a running training job keep their outputs,
 * retention works in batches, a delivered event re-enqueued is not counted as outstanding, and a
 * spend notification is never marked sent without its webhook queued.
 */

let cluster: TestCluster;
let owner: Client;
let t: TestTenant;
let hooks: WebhookReceiver;
let queue: Queue;
beforeAll(async () => {
  cluster = await startCluster({ agents: [] });
  owner = await ownerClient();
  t = await signUpTenant(cluster.api, 'Audit webhooks');
  hooks = await startWebhookReceiver();
  queue = new Queue(WEBHOOK_QUEUE, { connection: { url: cluster.api.env.REDIS_URL } as any, prefix: bullPrefix(cluster.api.env.REDIS_PREFIX) });
});
afterAll(async () => {
  await queue.close();
  await hooks.close();
  await owner.end();
  await cluster.close();
});

const endedJob = async (tenantId: string, url: string | null, extra: { minutesAgo?: number } = {}) => (await owner.query(
  `INSERT INTO jobs (tenant_id, kind, service, status, hardware, devices, attempt, webhook_url, created_at, started_at, completed_at, input, output)
   VALUES ($1, 'PREDICTION', 'system.echo', 'SUCCEEDED', 'CPU', 1, 1, $2, now() - make_interval(mins => $3 + 1),
           now() - make_interval(mins => $3 + 1), now() - make_interval(mins => $3), '{"message":"in"}', '{"message":"out"}') RETURNING id`,
  [tenantId, url, extra.minutesAgo ?? 0])).rows[0].id as string;

describe('retention', () => {
  it('keeps the outputs of a running training job\'s finished trials past the retention period (the orchestrator still needs them)', async () => {
    // A training job still RUNNING (maxMinutes may be up to 24 h), and one of its trials that
    // SUCCEEDED 2 h ago. The orchestrator exempts trials from retention
    // (`UPDATE jobs SET data_expires_at = NULL WHERE parent_id = ...`, training.orchestrator.ts),
    // so the trial is as the orchestrator leaves it: data_expires_at NULL.
    const parent = (await owner.query(
      `INSERT INTO jobs (tenant_id, kind, service, status, hardware, devices, input, max_attempts, started_at)
       VALUES ($1, 'TRAINING', 'training', 'RUNNING', 'CPU', 1, '{"audit":true}', 1, now() - interval '3 hours') RETURNING id`,
      [t.tenantId])).rows[0].id as string;
    const trial = (await owner.query(
      `INSERT INTO jobs (tenant_id, kind, parent_id, service, status, hardware, devices, attempt, created_at, started_at, completed_at, input, output, data_expires_at)
       VALUES ($1, 'TRIAL', $2, 'training.trial', 'SUCCEEDED', 'CPU', 1, 1, now() - interval '150 minutes', now() - interval '150 minutes',
               now() - interval '2 hours', '{"trial":0,"algorithm":"xgboost"}',
               '{"metrics":{"accuracy":0.93},"artifactKey":"tenants/x/training/y/trial-0/model.json"}', NULL) RETURNING id`,
      [t.tenantId, parent])).rows[0].id as string;
    try {
      // One retention pass of the reconciler.
      await (cluster.cp.reconciler as any).expireData();
      const [row] = (await owner.query('SELECT input, output FROM jobs WHERE id = $1', [trial])).rows;
      // The exemption should hold while the training job runs: finish() picks the best trial from
      // trials' outputs (a nulled one is skipped: wrong model version, or ALL_TRIALS_FAILED) and
      // discards the other trials' artifacts by output.artifactKey (a nulled one leaks).
      expect(row.output).not.toBeNull();
      expect(row.input).not.toBeNull();
    } finally {
      await owner.query(`UPDATE jobs SET status = 'CANCELED', completed_at = now() WHERE id = $1`, [parent]);
    }
  });

  it('clears expired job data in batches of 5,000 a tick, as it deletes old deliveries', async () => {
    // A backlog of expired jobs, as after the control plane was down for a while under load.
    const n = 6000;
    await owner.query(
      `INSERT INTO jobs (tenant_id, kind, service, status, hardware, devices, attempt, created_at, completed_at, input, output, data_expires_at)
       SELECT $1, 'PREDICTION', 'system.echo', 'SUCCEEDED', 'CPU', 1, 1, now() - interval '3 hours', now() - interval '2 hours',
              '{"message":"audit-bulk"}', '{"message":"x"}', now() - interval '1 hour'
         FROM generate_series(1, $2)`,
      [t.tenantId, n],
    );
    const before = Number((await owner.query(`SELECT count(*) FROM jobs WHERE tenant_id = $1 AND input->>'message' = 'audit-bulk'`, [t.tenantId])).rows[0].count);
    expect(before).toBe(n);
    await (cluster.cp.reconciler as any).expireData();
    const left = Number((await owner.query(`SELECT count(*) FROM jobs WHERE tenant_id = $1 AND input->>'message' = 'audit-bulk'`, [t.tenantId])).rows[0].count);
    // A bounded sweep (like the deliveries' LIMIT 5000) leaves the rest for later ticks.
    expect(left).toBeGreaterThan(0);
  });
});

describe('webhook sender fairness bookkeeping', () => {
  it('an already delivered event enqueued again (a replayed end, the sweep racing the delivery) is not outstanding, so the tenant\'s later events keep their priority', async () => {
    const tenant = await signUpTenant(cluster.api, 'Audit fairness');
    const sender = (cluster.cp.announcer as any).webhooks;
    const url = hooks.url('/fair');
    const delivered = async () => {
      const id = await endedJob(tenant.tenantId, url);
      await sender.enqueue({ tenantId: tenant.tenantId, jobId: id, type: 'prediction.succeeded', url });
      await waitFor(async () => (await owner.query('SELECT 1 FROM webhook_deliveries WHERE job_id = $1 AND delivered', [id])).rowCount === 1, 10_000, 'delivery');
      await waitFor(() => !sender.outstanding.get(tenant.tenantId)?.has(terminalWebhookId(id, 'prediction.succeeded')), 5000, 'settled');
      return id;
    };
    // Two events, each delivered, each announced again (the recorder's replay of an end it read
    // again; BullMQ keeps the completed job under the webhook-id, so the add is a no-op).
    for (const id of [await delivered(), await delivered()]) {
      await sender.enqueue({ tenantId: tenant.tenantId, jobId: id, type: 'prediction.succeeded', url });
    }
    // Nothing of this tenant is outstanding; its next event must not be queued behind others'.
    const fresh = await endedJob(tenant.tenantId, url);
    await sender.enqueue({ tenantId: tenant.tenantId, jobId: fresh, type: 'prediction.succeeded', url });
    const job = await queue.getJob(terminalWebhookId(fresh, 'prediction.succeeded'));
    // Fails with priority 2: the two delivered events still count as its backlog (FAIR_BACKLOG), for good.
    expect(job?.opts.priority ?? 0).toBe(0);
    expect(sender.outstanding.get(tenant.tenantId)?.size ?? 0).toBeLessThanOrEqual(1);
  });
});

describe('spend threshold webhooks', () => {
  it('a spend notification whose webhook could not be queued is not marked sent: the next check sends it', async () => {
    const tenant = await signUpTenant(cluster.api, 'Audit spend');
    await owner.query('UPDATE tenants SET webhook_url = $2 WHERE id = $1', [tenant.tenantId, hooks.url('/spend')]);
    const spend = cluster.cp.billing.spend as any;
    const q = spend.queue as Queue;
    const realAdd = q.add.bind(q);
    let calls = 0;
    // Redis failing (or the process dying) between the commit and the add.
    q.add = (async (...args: Parameters<Queue['add']>) => {
      calls++;
      if (calls === 1) throw new Error('Connection is closed.');
      return realAdd(...args);
    }) as any;
    try {
      await expect(spend.notify(tenant.tenantId, '2099-01', 80, 1000, 850)).rejects.toThrow('Connection is closed.');
      // The next check passes the same threshold again.
      await spend.notify(tenant.tenantId, '2099-01', 80, 1000, 860);
    } finally {
      q.add = realAdd as any;
    }
    expect(calls).toBe(2);
  });
});
