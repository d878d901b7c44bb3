/**
 * What crosses Redis between the control plane and node agents. Node agents import only this
 * file (and the runtimes), never database code: they hold no database credentials.
 */
export type Hardware = 'CPU' | 'GPU';
export type TerminalStatus = 'SUCCEEDED' | 'FAILED' | 'CANCELED';

/** Redis keys, all under the deployment's prefix. */
export const keys = (prefix: string) => ({
  /** BullMQ queue name of one node's dispatch queue (BullMQ adds its own `prefix:` in front). */
  nodeQueue: (node: string) => `node-${node}`,
  /** Stream of node → control plane events, consumed by a group (at-least-once, acked after commit). */
  events: `${prefix}:stream:node-events`,
  /** Stream of API → admitter "a job is waiting" wake-ups (Postgres is the truth; this is latency). */
  admission: `${prefix}:stream:admission`,
  /**
   * Pub/sub: one job's updates for waiting requests and subscriptions, published after each
   * commit; API processes subscribe to the jobs they wait for (JobUpdateBus).
   */
  jobUpdates: (jobId: string) => `${prefix}:pub:job:${jobId}`,
  /** Matches every job's update channel (PSUBSCRIBE; for tools that watch all jobs, e.g. benchmarks). */
  allJobUpdates: `${prefix}:pub:job:*`,
  /** Pub/sub: cancellations for node agents. */
  cancel: `${prefix}:pub:cancel`,
  /** A cancelled job id, checked by a node before it starts an attempt it already pulled. */
  canceled: (jobId: string) => `${prefix}:canceled:${jobId}`,
  /**
   * An attempt the control plane has taken back (preempted, given up as lost): its node stops it,
   * or never starts it, like a cancelled job's, though the job itself runs on as a later attempt.
   * The node reads it before starting and with each heartbeat, in case the pub/sub message was lost.
   */
  stopped: (jobId: string, attempt: number) => `${prefix}:stopped:${jobId}:${attempt}`,
  /** Hash of a node's registration; heartbeat key with a TTL. */
  node: (node: string) => `${prefix}:node:${node}`,
  heartbeat: (node: string) => `${prefix}:node:${node}:hb`,
  nodeSet: `${prefix}:nodes`,
});

/** How long a stopped attempt's marker lives: far longer than a node takes to read it. */
export const STOPPED_MARKER_SECONDS = 24 * 3600;

/** BullMQ queues share the deployment prefix so test runs and deployments never mix. */
export const bullPrefix = (prefix: string) => `${prefix}:bull`;

/** The BullMQ queue of webhook deliveries (the control plane's WebhookSender works it; the API adds resends). */
export const WEBHOOK_QUEUE = 'webhooks';

/** One webhook event to deliver. */
export interface WebhookTask {
  tenantId: string;
  jobId: string;
  type: string;
  url: string;
  /** Standard Webhooks `webhook-id`: the same for every attempt (and resend) of this event. */
  webhookId: string;
}

/**
 * BullMQ options of a webhook delivery job (job events, resends, spend alerts): retried on the
 * worker's schedule (backoff `custom`, see webhookWorkerSettings), the last 1,000 done kept.
 */
export const webhookJobOptions = (jobId: string, attempts: number) =>
  ({ jobId, attempts, backoff: { type: 'custom' }, removeOnComplete: 1000, removeOnFail: 1000 });

/** A terminal event's `webhook-id`: one per job and event, so a replayed end or a resend is recognisably the same event. */
export const terminalWebhookId = (jobId: string, type: string) => `msg_${jobId}_${type}`;

/** What the API writes to the admission stream (Postgres already holds the change; this is latency). */
export type AdmissionMessage =
  | { op: 'enqueue'; id: string; tenantId: string; hardware: Hardware; devices: number; enqueuedAt: number }
  | { op: 'canceled'; id: string }
  | { op: 'quota'; tenantId: string; hardware: Hardware; guaranteed: number; limit: number };

/** Payload of a dispatch (one attempt of one job on one node). */
export interface DispatchPayload {
  jobId: string;
  tenantId: string;
  attempt: number;
  service: string;
  input: unknown;
  devices: number;
  hardware: Hardware;
  /** Epoch ms; an attempt that would start after it ends CANCELED without running. */
  deadlineAt: number | null;
}

/**
 * One node's share of an admission round, when it is more than one attempt: one BullMQ job (one
 * add, one pickup, one completion in Redis) instead of one per attempt. The node runs them all at
 * once (the admitter placed them on free devices) and reports each attempt on its own, exactly as
 * if each had come alone. A node takes both forms.
 */
export interface DispatchBatch {
  attempts: DispatchPayload[];
}
export type DispatchMessage = DispatchPayload | DispatchBatch;

/** At most this many attempts share one dispatch message (one BullMQ job). */
export const MAX_DISPATCH_BATCH = 64;

export type NodeEvent =
  | { type: 'started'; jobId: string; attempt: number; node: string; at: number }
  | { type: 'progress'; jobId: string; attempt: number; node: string; progress?: number; logs?: string[]; at: number }
  | {
      type: 'ended'; jobId: string; attempt: number; node: string; status: TerminalStatus;
      output?: unknown; error?: { code: string; message: string };
      startedAt: number | null; endedAt: number; devices: number; hardware: Hardware;
      /** Wall time measured with a monotonic clock (the epoch stamps have 1 ms resolution). */
      durationMs?: number;
      metrics?: Record<string, number>;
    };

/** Node registration, kept in Redis and mirrored to Postgres by the control plane. */
export interface NodeInfo {
  name: string;
  hardware: Hardware;
  devices: number;
  gpuModel: string | null;
  startedAt: number;
  /** `jobId:attempt` of attempts the node is running now (sent with each heartbeat). */
  running: string[];
  /** When this heartbeat was sent (epoch ms). */
  beatAt: number;
}

export const HEARTBEAT_INTERVAL_MS = 1000;
export const HEARTBEAT_TTL_MS = 4000;
