/** Contract between the node agent and the model runtimes. */

export interface JobContext {
  signal: AbortSignal;
  /** The job's tenant: a stored input must lie in its namespace (`inputs/<tenantId>/…`). */
  tenantId?: string;
  /** Fraction in [0, 1]. */
  reportProgress(fraction: number): void;
  log(line: string): void;
}

export interface RunMetrics {
  /** Time spent loading models for this call (0 when already warm). */
  loadMs: number;
  /** Inference time. */
  runMs: number;
  /** Time spent waiting for a free worker thread. */
  queueMs?: number;
}

export interface RunResult {
  output: unknown;
  metrics: RunMetrics;
}

export interface RuntimeHost {
  /**
   * `input` is what prepareInput produced: an image inline as `{ base64, ... }`, or, as the API
   * submits jobs, `{ ref, ... }` naming the bytes in the artifact store, which the host loads first.
   */
  run(serviceId: string, input: unknown, ctx: JobContext): Promise<RunResult>;
  /** Preloads models (all services when omitted). */
  warm(serviceIds?: string[]): Promise<void>;
  close(): Promise<void>;
}

export type RuntimeErrorCode =
  | 'JOB_FAILED' | 'CANCELED' | 'MODEL_ERROR' | 'INVALID_INPUT' | 'UNKNOWN_SERVICE' | 'HOST_CLOSED'
  /** The job's stored input image is gone from the artifact store (deleted by retention, or lost). */
  | 'INPUT_EXPIRED'
  /** The artifact store could not be read (down, misconfigured): the input may still be there. */
  | 'INPUT_UNAVAILABLE'
  /** The job ran past its maximum run time on a worker thread (see maxRunMsFor) and was stopped. */
  | 'RUN_TIMEOUT';

/** The one error type runtimes throw; `code` is what the agent records on the job. */
export class RuntimeError extends Error {
  constructor(
    readonly code: RuntimeErrorCode,
    message: string,
  ) {
    super(message);
    this.name = code === 'CANCELED' ? 'AbortError' : 'RuntimeError';
  }
}

export const canceled = (message = 'job canceled') => new RuntimeError('CANCELED', message);
