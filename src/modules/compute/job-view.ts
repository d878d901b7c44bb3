import type { Hardware, JobKind, JobStatus } from './compute.entities';

export interface JobView {
  id: string;
  kind: JobKind;
  service: string;
  status: JobStatus;
  progress: number;
  output: unknown;
  error: { code: string; message: string } | null;
  logs: string[];
  attempt: number;
  nodeId: string | null;
  hardware: Hardware;
  createdAt: Date;
  startedAt: Date | null;
  completedAt: Date | null;
  usage: { seconds: number; hardware: Hardware };
  metrics: Record<string, number>;
}

/** The `jobs` columns a view is made of (every one but `input`: it can be a multi-megabyte image and no view shows it). */
export const VIEW_COLUMNS = ['id', 'kind', 'service', 'status', 'progress', 'output', 'error', 'logs', 'attempt', 'node_id', 'hardware',
  'created_at', 'started_at', 'completed_at', 'metrics'] as const;

/** A job's billable milliseconds so far, for `usage` (`j` is the jobs row). */
export const BILLABLE_MS_SQL = `COALESCE((SELECT sum(u.billable_ms) FROM usage_ledger u WHERE u.job_id = j.id AND u.billable), 0)::bigint`;

export const SELECT_VIEW = `SELECT ${VIEW_COLUMNS.map((c) => `j.${c}`).join(', ')}, ${BILLABLE_MS_SQL} AS billable_ms FROM jobs j`;

/** A row of VIEW_COLUMNS + billable_ms, as Postgres returns it or as it travelled as JSON (dates as strings). */
export function toView(r: any): JobView {
  const date = (d: unknown) => (d == null ? null : d instanceof Date ? d : new Date(d as string));
  return {
    id: r.id, kind: r.kind, service: r.service, status: r.status, progress: r.progress, output: r.output,
    error: r.error, logs: r.logs, attempt: r.attempt, nodeId: r.node_id, hardware: r.hardware, createdAt: date(r.created_at)!,
    startedAt: date(r.started_at), completedAt: date(r.completed_at), metrics: r.metrics,
    usage: { seconds: Number(r.billable_ms) / 1000, hardware: r.hardware },
  };
}
