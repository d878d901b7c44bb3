import { Counter, Gauge, Histogram, type Registry } from 'prom-client';

/** Kueue-style metrics of the execution plane. */
export class ComputeMetrics {
  readonly pendingJobs: Gauge<'tenant' | 'hardware'>;
  readonly admissionWait: Histogram<'hardware'>;
  readonly preemptions: Counter<'hardware'>;
  readonly nodeDevices: Gauge<'node' | 'hardware' | 'state'>;
  readonly jobsEnded: Counter<'status' | 'hardware'>;
  readonly webhookAttempts: Counter<'outcome'>;
  /** Webhook events waiting to be (re)tried, read from their queue when scraped (set by WebhookSender). */
  webhookBacklog: (() => Promise<{ waiting: number; delayed: number }>) | null = null;

  constructor(registry: Registry) {
    const registers = [registry];
    this.pendingJobs = new Gauge({ name: 'nimbus_pending_jobs', help: 'Queued jobs waiting for admission', labelNames: ['tenant', 'hardware'], registers });
    this.admissionWait = new Histogram({
      name: 'nimbus_admission_wait_seconds', help: 'Time from enqueue to admission', labelNames: ['hardware'],
      buckets: [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30, 120, 600, 3600], registers,
    });
    this.preemptions = new Counter({ name: 'nimbus_preemptions_total', help: 'Borrowed jobs preempted', labelNames: ['hardware'], registers });
    this.nodeDevices = new Gauge({ name: 'nimbus_node_devices', help: 'Devices per node by state (used, free)', labelNames: ['node', 'hardware', 'state'], registers });
    this.jobsEnded = new Counter({ name: 'nimbus_jobs_ended_total', help: 'Jobs that reached a terminal state', labelNames: ['status', 'hardware'], registers });
    this.webhookAttempts = new Counter({
      name: 'nimbus_webhook_attempts_total', help: 'Webhook POSTs by outcome: delivered (2xx) or failed (another status, refused, timed out)', labelNames: ['outcome'], registers,
    });
    const backlog = () => this.webhookBacklog;
    new Gauge({
      name: 'nimbus_webhooks_pending', help: 'Webhook events not yet delivered: waiting to be sent, or delayed until their next retry', labelNames: ['state'], registers,
      async collect() {
        const read = backlog();
        const counts = read ? await read().catch(() => ({ waiting: NaN, delayed: NaN })) : { waiting: 0, delayed: 0 };
        this.set({ state: 'waiting' }, counts.waiting);
        this.set({ state: 'delayed' }, counts.delayed);
      },
    });
  }
}
