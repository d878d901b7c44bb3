import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { signUpTenant, startTestApi, type TestApi } from '../support/api';
import { waitFor } from '../support/cluster';
import { childEnv } from '../support/env';
import { PREDICT } from '../support/gql';
import { freePort } from '../support/net';

/**
 * The split deployment (docker-compose): API, `npm run control-plane` and a node agent as three
 * processes. The control plane serves its own /metrics, since the API's has only its own.
 */

const DIST = join(__dirname, '..', '..', 'dist', 'workers');
let api: TestApi;
let controlPlane: ChildProcess;
let agent: ChildProcess;
let metricsUrl: string;

const stop = async (child: ChildProcess | undefined) => {
  if (!child || child.exitCode !== null) return;
  const exited = new Promise((r) => child.once('exit', r));
  child.kill('SIGKILL');
  await exited;
};

beforeAll(async () => {
  api = await startTestApi();
  const port = await freePort();
  metricsUrl = `http://127.0.0.1:${port}`;
  controlPlane = spawn(process.execPath, [join(DIST, 'control-plane.js')], {
    env: await childEnv({ METRICS_PORT: String(port), HOST: '127.0.0.1', LOG_LEVEL: 'error' }), stdio: ['ignore', 'ignore', 'inherit'],
  });
  await waitFor(async () => (await fetch(`${metricsUrl}/healthz`).catch(() => null))?.status === 200, 30_000, 'the control plane\'s /healthz');
  agent = spawn(process.execPath, [join(DIST, 'node-agent', 'main.js'), '--name', 'split-cpu', '--hardware', 'CPU', '--devices', '3'], {
    env: await childEnv(), stdio: ['ignore', 'ignore', 'inherit'],
  });
}, 60_000);
afterAll(async () => {
  await stop(agent);
  await stop(controlPlane);
  await api.close();
});

const metrics = async () => (await fetch(`${metricsUrl}/metrics`)).text();
/** The value of one sample line, e.g. `nimbus_node_devices{node="x",hardware="CPU",state="free"}`. */
const sample = (text: string, name: string) => {
  const line = text.split('\n').find((l) => l.startsWith(`${name} `));
  return line === undefined ? undefined : Number(line.slice(name.length + 1));
};

describe('npm run control-plane on its own', () => {
  it('runs jobs from a separate API on a separate node agent, and serves its metrics on METRICS_PORT', async () => {
    await waitFor(async () => sample(await metrics(), 'nimbus_node_devices{node="split-cpu",hardware="CPU",state="free"}') === 3, 20_000, 'the node in the metrics');
    const t = await signUpTenant(api, 'Split');
    const res = await api.gql(PREDICT, { input: { service: 'system.echo', input: { message: 'across processes' }, wait: 20 } }, t.token);
    expect(res.errors).toBeUndefined();
    expect(res.data.predict).toMatchObject({ status: 'SUCCEEDED', output: { message: 'across processes' }, node: { id: 'split-cpu' } });

    const text = await metrics();
    expect(sample(text, 'nimbus_jobs_ended_total{status="SUCCEEDED",hardware="CPU"}')).toBe(1);
    expect(sample(text, 'nimbus_admission_wait_seconds_count{hardware="CPU"}')).toBe(1);
    // Billing's metrics are there too: the backlog gauges are read from Postgres at scrape time.
    for (const name of ['nimbus_billing_meter_events_total', 'nimbus_billing_unreported_rows', 'nimbus_billing_lag_seconds', 'nimbus_pending_jobs']) {
      expect(text).toContain(`# TYPE ${name} `);
    }
    expect(sample(text, 'nimbus_billing_unreported_rows')).toBeGreaterThanOrEqual(0);
    expect((await fetch(`${metricsUrl}/nope`)).status).toBe(404);
  });
});
