import { BadUserInputError, NetworkError, NimbusError, WaitTimeoutError } from './errors';
import {
  ApiKeysDocument, CancelPredictionDocument, CancelTrainingJobDocument, CompleteDatasetUploadDocument, CreateApiKeyDocument,
  CreateDatasetDocument, CreateDatasetUploadDocument, CreateDeploymentDocument, CreateTrainingJobDocument, CurrentBillDocument,
  DatasetDocument, DatasetsDocument, DeploymentDocument, DeploymentsDocument, InvoiceDocument, InvoicesDocument, LogInDocument,
  MeDocument, ModelDocument, ModelVersionDocument, ModelsDocument, NodesDocument, PredictDocument, PredictionDocument,
  PredictionUpdatedDocument, PredictionsDocument, QuotasDocument, ResendWebhookDocument, RevokeApiKeyDocument, RotateWebhookSecretDocument, ServicesDocument, SetQuotaDocument,
  SetSpendLimitDocument, SignUpDocument, TrainingJobDocument, TrainingJobUpdatedDocument, UpdateDeploymentDocument, UpdateWebhookSettingsDocument,
  UsageDocument, WebhookDeliveriesDocument, WebhookSettingsDocument,
  type ApiKeyScope, type CreateDatasetInput, type CreateDeploymentInput, type CreateTrainingJobInput, type DatasetFormat,
  type SetQuotaInput, type SignUpInput, type WebhookEvent,
} from './generated/graphql';
import { PageIterator, toPage, type ListOptions, type Page } from './pagination';
import type { DeploymentInput, DeploymentOutput, InputFor, OutputFor } from './services';
import { Transport, USER_AGENT, randomId, sleep, type FetchLike, type RequestOptions, type TypedDocument } from './transport';
import type {
  ApiKey, ClusterNode, CreatedApiKey, CurrentBill, Dataset, DatasetVersion, Deployment, Invoice, LogInResult, Me, Model,
  ModelSummary, ModelVersion, Money, Prediction, PredictionSummary, Quota, QuotaSetting, RevokedApiKey, Service,
  SignUpResult, TrainingJob, UploadTarget, Usage, WebhookDelivery, WebhookSettings,
} from './types';
import { inferDatasetFormat, readUploadSource, type UploadSource } from './upload';
import { isTerminal, waitForJob, type JobAdapter, type WaitOptions } from './wait';
import { SubscriptionConnection } from './websocket';

export const DEFAULT_BASE_URL = 'http://localhost:4000';

export interface NimbusOptions {
  /** An API key (`nmb_…`) or a user JWT (from `auth.logIn`); default: env NIMBUS_API_KEY. */
  apiKey?: string;
  /** The API's origin (or its /graphql URL); default: env NIMBUS_BASE_URL, else http://localhost:4000. */
  baseUrl?: string;
  /** A fetch implementation (default: the global fetch, Node ≥ 18). */
  fetch?: FetchLike;
  /**
   * WebSocket constructor for subscriptions (waits). Default: the global WebSocket, else the `ws`
   * package when installed, else waits poll. `false` turns WebSockets off.
   */
  webSocketImpl?: unknown;
  /** Retries of idempotent requests on RATE_LIMITED, SERVICE_UNAVAILABLE and network errors (default 2). */
  maxRetries?: number;
  /** Time limit of one HTTP request in ms (default 60 000; predict adds the time it asks the server to wait). */
  timeoutMs?: number;
  /** Extra HTTP headers on every request. */
  headers?: Record<string, string>;
}

interface PredictCommon {
  /**
   * Seconds to wait for the result (default 30, as the API). Up to 60 the server holds the
   * request; longer (or `true`: until the job ends) the SDK goes on waiting over the subscription
   * or by polling. `0` or `false` returns at once (QUEUED). A job still running when the time is
   * up is returned as it is.
   */
  wait?: number | boolean;
  /** Terminal events (and STARTED/PROGRESS if listed in webhookEvents) are POSTed there, signed. */
  webhookUrl?: string;
  webhookEvents?: WebhookEvent[];
  /** If the job has not started by then it ends CANCELED and is not billed. */
  deadlineSeconds?: number;
  /** Same key, same job: a retried call never creates a second one. Generated when not given. */
  idempotencyKey?: string;
  /** Progress while waiting (the SDK then waits over the subscription instead of the held request). */
  onProgress?: (p: Prediction<unknown>) => void;
  /** Stops waiting (and, with cancelOnAbort, cancels the prediction). */
  signal?: AbortSignal;
  cancelOnAbort?: boolean;
}
export interface PredictServiceParams<S extends string> extends PredictCommon {
  /** A pre-tuned service id (see `services.list()`). */
  service: S;
  deployment?: undefined;
  input: InputFor<S>;
}
export interface PredictDeploymentParams extends PredictCommon {
  /** A deployment of a custom model. */
  deployment: string;
  service?: undefined;
  input: DeploymentInput;
}

export type WaitableJob =
  | Pick<PredictionSummary, '__typename' | 'id' | 'status'>
  | Pick<TrainingJob, '__typename' | 'id' | 'status'>;

const MAX_SERVER_WAIT = 60;

/**
 * The Nimbus API client.
 *
 *     const nimbus = new Nimbus({ apiKey: process.env.NIMBUS_API_KEY });
 *     const p = await nimbus.predict({ service: 'language.sentiment', input: { text: 'I love it' } });
 *     p.output?.label; // 'positive'
 */
export class Nimbus {
  readonly baseUrl: string;
  readonly graphqlUrl: string;
  private readonly options: NimbusOptions;
  private readonly transport: Transport;
  private readonly ws: SubscriptionConnection;

  constructor(options: NimbusOptions = {}) {
    const env = typeof process !== 'undefined' && process.env ? process.env : {};
    this.options = options;
    const base = (options.baseUrl ?? env.NIMBUS_BASE_URL ?? DEFAULT_BASE_URL).replace(/\/+$/, '');
    this.baseUrl = base.replace(/\/graphql$/, '');
    this.graphqlUrl = `${this.baseUrl}/graphql`;
    const token = options.apiKey ?? env.NIMBUS_API_KEY ?? undefined;
    const fetchImpl = options.fetch ?? (globalThis.fetch as FetchLike | undefined);
    if (!fetchImpl) throw new NimbusError('No fetch implementation: use Node 18+ or pass `fetch`', { code: 'CONFIGURATION' });
    this.transport = new Transport({
      url: this.graphqlUrl,
      token: token || undefined,
      fetch: fetchImpl.bind(globalThis) as FetchLike,
      maxRetries: options.maxRetries ?? 2,
      timeoutMs: options.timeoutMs ?? 60_000,
      headers: { 'user-agent': USER_AGENT, ...(options.headers ?? {}) },
      maxRetryAfterSeconds: 60,
    });
    this.ws = new SubscriptionConnection({
      url: this.graphqlUrl.replace(/^http/, 'ws'),
      token: token || undefined,
      webSocketImpl: options.webSocketImpl,
    });
  }

  /** Whether the client has a credential (API key or JWT). */
  get authenticated(): boolean {
    return this.transport.opts.token !== undefined;
  }

  /** A client with the same options and another credential (e.g. the token from `auth.logIn`). */
  withApiKey(apiKey: string): Nimbus {
    return new Nimbus({ ...this.options, baseUrl: this.baseUrl, apiKey });
  }

  /** Closes the subscription connection, if one is open (it also closes by itself when idle). */
  close(): Promise<void> {
    return this.ws.close();
  }

  /** Sends any typed document (e.g. one of the generated ones) and returns its data. */
  request<R, V>(document: TypedDocument<R, V>, variables: V, opts: RequestOptions = {}): Promise<R> {
    return this.transport.request(document, variables, opts);
  }

  private query<R, V>(document: TypedDocument<R, V>, variables: V, signal?: AbortSignal): Promise<R> {
    return this.transport.request(document, variables, { idempotent: true, signal });
  }

  private mutate<R, V>(document: TypedDocument<R, V>, variables: V, idempotent: boolean, signal?: AbortSignal): Promise<R> {
    return this.transport.request(document, variables, { idempotent, signal });
  }

  // ---------- predictions ----------

  /**
   * Runs a pre-tuned service or a deployed custom model (a job on a node) and returns the
   * prediction; waits for its result as `wait` says (default 30 s).
   */
  predict<S extends string>(params: PredictServiceParams<S>): Promise<Prediction<OutputFor<S>>>;
  predict(params: PredictDeploymentParams): Promise<Prediction<DeploymentOutput>>;
  async predict(params: PredictServiceParams<string> | PredictDeploymentParams): Promise<Prediction<unknown>> {
    const { wait, onProgress, signal, cancelOnAbort } = params;
    const started = Date.now();
    const waitMs = wait === true ? Infinity : wait === false ? 0 : wait === undefined ? 30_000 : Math.max(0, wait) * 1000;
    // Progress and cancel-on-abort need the job's id at once: create it without holding the request.
    const clientSide = Boolean(onProgress || (signal && cancelOnAbort));
    const serverWait = clientSide ? 0
      : wait === undefined ? undefined
        : Math.min(MAX_SERVER_WAIT, Math.floor(waitMs / 1000));
    const input = {
      service: params.service, deployment: params.deployment, input: params.input as unknown,
      wait: serverWait, webhookUrl: params.webhookUrl, webhookEvents: params.webhookEvents,
      deadlineSeconds: params.deadlineSeconds, idempotencyKey: params.idempotencyKey ?? randomId(),
    };
    const timeoutMs = Math.max(this.transport.opts.timeoutMs, ((serverWait ?? 30) + 15) * 1000);
    // The idempotency key makes the create safe to retry.
    const { predict } = await this.transport.request(PredictDocument, { input }, { idempotent: true, signal, timeoutMs });
    let p = predict as Prediction<unknown>;
    const left = waitMs - (Date.now() - started);
    if (!isTerminal(p.status) && left > 0 && (clientSide || waitMs > (serverWait ?? 30) * 1000)) {
      try {
        p = await this.wait(p, { onProgress, signal, cancelOnAbort, timeoutMs: Number.isFinite(left) ? left : undefined });
      } catch (err) {
        if (!(err instanceof WaitTimeoutError)) throw err;
        p = (err.job as Prediction<unknown> | null) ?? (await this.predictions.get(p.id));
      }
    }
    return p;
  }

  private readonly predictionAdapter: JobAdapter<Prediction<unknown>> = {
    name: 'prediction',
    get: async (id, signal) => (await this.query(PredictionDocument, { id }, signal)).prediction as Prediction<unknown>,
    cancel: (id) => this.mutate(CancelPredictionDocument, { id }, true),
    subscription: {
      document: PredictionUpdatedDocument as TypedDocument<unknown, { id: string }>,
      pick: (data) => (data as { predictionUpdated: Prediction<unknown> }).predictionUpdated,
    },
  };

  private readonly trainingAdapter: JobAdapter<TrainingJob> = {
    name: 'training job',
    get: async (id, signal) => (await this.query(TrainingJobDocument, { id }, signal)).trainingJob as TrainingJob,
    cancel: (id) => this.mutate(CancelTrainingJobDocument, { id }, true),
    subscription: {
      document: TrainingJobUpdatedDocument as TypedDocument<unknown, { id: string }>,
      pick: (data) => (data as { trainingJobUpdated: TrainingJob }).trainingJobUpdated,
    },
  };

  /**
   * Waits until a prediction or training job ends (SUCCEEDED, FAILED or CANCELED) and returns it:
   * over the `…Updated` subscription, or polling with backoff when WebSockets are unavailable.
   */
  wait<O>(job: Prediction<O>, opts?: WaitOptions<Prediction<O>>): Promise<Prediction<O>>;
  wait(job: Pick<PredictionSummary, '__typename' | 'id' | 'status'>, opts?: WaitOptions<Prediction<unknown>>): Promise<Prediction<unknown>>;
  wait(job: Pick<TrainingJob, '__typename' | 'id' | 'status'>, opts?: WaitOptions<TrainingJob>): Promise<TrainingJob>;
  async wait(job: WaitableJob, opts: WaitOptions<any> = {}): Promise<unknown> {
    if (job.__typename === 'TrainingJob') {
      const initial = 'trials' in job ? (job as TrainingJob) : null;
      if (initial && isTerminal(initial.status)) return initial;
      return waitForJob(this.trainingAdapter, this.ws, job.id, opts);
    }
    if (job.__typename !== 'Prediction') throw new BadUserInputError('wait() takes a prediction or a training job', { code: 'BAD_USER_INPUT', field: 'job' });
    const initial = 'output' in job ? (job as Prediction<unknown>) : null;
    if (initial && isTerminal(initial.status)) return initial;
    return waitForJob(this.predictionAdapter, this.ws, job.id, opts);
  }

  readonly predictions = {
    get: async <O = unknown>(id: string, opts: { signal?: AbortSignal } = {}): Promise<Prediction<O>> =>
      (await this.query(PredictionDocument, { id }, opts.signal)).prediction as Prediction<O>,
    /** Cancels a queued or running prediction; an ended one is returned as it is. */
    cancel: async (id: string): Promise<Prediction<unknown>> =>
      (await this.mutate(CancelPredictionDocument, { id }, true)).cancelPrediction as Prediction<unknown>,
    /** The tenant's predictions, newest first, fetched page by page as you iterate. */
    list: (opts: ListOptions = {}): PageIterator<PredictionSummary> =>
      new PageIterator(async (first, after, signal) => toPage((await this.query(PredictionsDocument, { first, after }, signal)).predictions), opts),
    wait: async <O = unknown>(id: string, opts: WaitOptions<Prediction<O>> = {}): Promise<Prediction<O>> =>
      waitForJob(this.predictionAdapter, this.ws, id, opts as WaitOptions<Prediction<unknown>>) as Promise<Prediction<O>>,
  };

  readonly services = {
    /** The pre-tuned AI services and their prices. */
    list: async (): Promise<Service[]> => (await this.query(ServicesDocument, {})).services,
  };

  // ---------- accounts ----------

  /** The caller: tenant, and the user and role when the credential is a JWT. */
  async me(): Promise<Me> {
    return (await this.query(MeDocument, {})).me;
  }

  readonly auth = {
    /** Creates a user and a tenant it owns; returns a JWT (`token`) for that tenant. */
    signUp: async (input: SignUpInput): Promise<SignUpResult> => (await this.mutate(SignUpDocument, { input }, false)).signUp,
    /** Returns a JWT (`token`); `nimbus.withApiKey(token)` makes a client that uses it. */
    logIn: async (input: { email: string; password: string }): Promise<LogInResult> =>
      (await this.mutate(LogInDocument, { email: input.email, password: input.password }, true)).logIn,
  };

  readonly apiKeys = {
    /** The secret is in the result only: store it now. */
    create: async (input: { name: string; scopes: ApiKeyScope[] }): Promise<CreatedApiKey> =>
      (await this.mutate(CreateApiKeyDocument, { input }, false)).createApiKey,
    revoke: async (id: string): Promise<RevokedApiKey> => (await this.mutate(RevokeApiKeyDocument, { id }, true)).revokeApiKey,
    list: (opts: ListOptions = {}): PageIterator<ApiKey> =>
      new PageIterator(async (first, after, signal) => toPage((await this.query(ApiKeysDocument, { first, after }, signal)).apiKeys), opts),
  };

  /** The tenant's webhook URL and signing secret (ADMIN scope: an owner's or admin's JWT, or an ADMIN key), and its deliveries. */
  readonly webhooks = {
    /** `signingSecret` is what `verifyWebhook` needs. */
    settings: async (): Promise<WebhookSettings> => (await this.query(WebhookSettingsDocument, {})).webhookSettings,
    /** The URL for account events (spend-limit thresholds); `null` removes it. */
    update: async (input: { url: string | null }): Promise<WebhookSettings> =>
      (await this.mutate(UpdateWebhookSettingsDocument, { input }, true)).updateWebhookSettings,
    /** A new secret; the old one keeps signing beside it for 24 h (`previousSecretExpiresAt`). Not retried: each call rotates. */
    rotateSecret: async (): Promise<WebhookSettings> => (await this.mutate(RotateWebhookSecretDocument, {}, false)).rotateWebhookSecret,
    /** Sends a job's terminal webhook again, with its original webhook-id (ADMIN scope). Not retried: each call sends. */
    resend: async (jobId: string): Promise<{ webhookId: string; eventType: string; url: string }> =>
      (await this.mutate(ResendWebhookDocument, { jobId }, false)).resendWebhook,
    /** Every delivery attempt, newest first (READ scope); `jobId` for one job's. */
    deliveries: (opts: ListOptions & { jobId?: string } = {}): PageIterator<WebhookDelivery> =>
      new PageIterator(async (first, after, signal) =>
        toPage((await this.query(WebhookDeliveriesDocument, { first, after, jobId: opts.jobId }, signal)).webhookDeliveries), opts),
  };

  // ---------- datasets, training, models, deployments ----------

  readonly datasets = {
    /** Creates a dataset and the signed URL to PUT its first file to (`upload` does all three steps). */
    create: async (input: CreateDatasetInput): Promise<{ dataset: Omit<Dataset, 'versions'>; upload: UploadTarget }> =>
      (await this.mutate(CreateDatasetDocument, { input }, false)).createDataset as { dataset: Omit<Dataset, 'versions'>; upload: UploadTarget },
    /**
     * Uploads a CSV or JSONL file: createDataset (or, with `datasetId`, createDatasetUpload for a new
     * version of that dataset), PUT of the bytes to the signed URL with its headers, then
     * completeDatasetUpload, which validates and profiles the file into an immutable version.
     */
    upload: async (
      source: UploadSource, opts: { name?: string; format?: DatasetFormat; datasetId?: string; signal?: AbortSignal } = {},
    ): Promise<{ dataset: Dataset; version: DatasetVersion }> => {
      const body = await readUploadSource(source);
      let dataset: { id: string };
      let upload: UploadTarget;
      if (opts.datasetId) {
        upload = (await this.mutate(CreateDatasetUploadDocument, { datasetId: opts.datasetId }, false, opts.signal)).createDatasetUpload as UploadTarget;
        dataset = { id: opts.datasetId };
      } else {
        const name = opts.name ?? body.fileName?.replace(/\.[^.]+$/, '');
        if (!name) throw new BadUserInputError('datasets.upload needs a name', { code: 'BAD_USER_INPUT', field: 'name' });
        const format = opts.format ?? inferDatasetFormat(body.fileName, body.bytes);
        ({ dataset, upload } = await this.datasets.create({ name, format }));
      }
      if (body.bytes.byteLength > upload.maxBytes) {
        throw new BadUserInputError(`The file is ${body.bytes.byteLength} bytes; the limit is ${upload.maxBytes}`, { code: 'BAD_USER_INPUT', field: 'source' });
      }
      await this.put(new URL(upload.url, this.baseUrl).toString(), upload.method || 'PUT', upload.headers ?? {}, body.bytes, opts.signal);
      const version = (await this.mutate(CompleteDatasetUploadDocument, { uploadId: upload.id }, true, opts.signal)).completeDatasetUpload;
      const fresh = (await this.query(DatasetDocument, { id: dataset.id }, opts.signal)).dataset;
      return { dataset: fresh, version };
    },
    get: async (id: string): Promise<Dataset> => (await this.query(DatasetDocument, { id })).dataset,
    list: (opts: ListOptions = {}): PageIterator<Dataset> =>
      new PageIterator(async (first, after, signal) => toPage((await this.query(DatasetsDocument, { first, after }, signal)).datasets), opts),
  };

  /** PUT to a signed upload URL (the URL is the credential: no Authorization header is sent). */
  private async put(url: string, method: string, headers: Record<string, string>, bytes: Uint8Array, signal?: AbortSignal): Promise<void> {
    const fetchImpl = this.transport.opts.fetch;
    const max = this.transport.opts.maxRetries;
    for (let attempt = 0; ; attempt++) {
      let status = 0;
      let detail = '';
      try {
        const res = await fetchImpl(url, { method, headers, body: bytes as unknown as RequestInit['body'], signal });
        if (res.ok) return;
        status = res.status;
        detail = (await res.text()).slice(0, 300);
      } catch (err) {
        if (signal?.aborted) throw signal.reason;
        if (attempt >= max) throw new NetworkError(`Upload to ${new URL(url).origin} failed: ${(err as Error).message}`, { cause: err });
      }
      // A signed URL works once: after a lost answer, "already used" means the first PUT got through.
      if (status === 410 && attempt > 0 && /"USED"/.test(detail)) return;
      if (status && (status < 500 || attempt >= max)) {
        const message = /"message"\s*:\s*"([^"]+)"/.exec(detail)?.[1] ?? detail;
        throw new NimbusError(`Upload failed (HTTP ${status})${message ? `: ${message}` : ''}`, { code: 'UPLOAD_FAILED', status });
      }
      await sleep(500 * 2 ** attempt, signal);
    }
  }

  readonly trainings = {
    /**
     * Starts a training job: an AutoML search (`automl`) or one `algorithm`, then a model version.
     * Always sent with an idempotency key (generated when absent), so a retry never starts two.
     */
    create: async (input: CreateTrainingJobInput): Promise<TrainingJob> =>
      (await this.mutate(CreateTrainingJobDocument, { input: { ...input, idempotencyKey: input.idempotencyKey ?? randomId() } }, true)).createTrainingJob as TrainingJob,
    get: async (id: string): Promise<TrainingJob> => (await this.query(TrainingJobDocument, { id })).trainingJob as TrainingJob,
    /** Cancels the training job and its trials that have not ended. */
    cancel: async (id: string): Promise<TrainingJob> => (await this.mutate(CancelTrainingJobDocument, { id }, true)).cancelTrainingJob as TrainingJob,
    wait: (id: string, opts: WaitOptions<TrainingJob> = {}): Promise<TrainingJob> => waitForJob(this.trainingAdapter, this.ws, id, opts),
  };

  readonly models = {
    /** Models, newest first, each with its versions (20 per request by default: versions make pages costly). */
    list: (opts: ListOptions = {}): PageIterator<ModelSummary> =>
      new PageIterator(async (first, after, signal) => toPage((await this.query(ModelsDocument, { first, after }, signal)).models) as Page<ModelSummary>, { pageSize: 20, ...opts }),
    get: async (id: string): Promise<Model> => (await this.query(ModelDocument, { id })).model as Model,
    version: async (id: string): Promise<ModelVersion> => (await this.query(ModelVersionDocument, { id })).modelVersion as ModelVersion,
  };

  readonly deployments = {
    /** Binds a name to a model version; predict with `predict({ deployment: id, input: { rows } })`. */
    create: async (input: CreateDeploymentInput): Promise<Deployment> => (await this.mutate(CreateDeploymentDocument, { input }, false)).createDeployment,
    /** Points the deployment at another version of its model (roll forward or back). */
    update: async (id: string, input: { modelVersionId: string }): Promise<Deployment> =>
      (await this.mutate(UpdateDeploymentDocument, { id, modelVersionId: input.modelVersionId }, true)).updateDeployment,
    get: async (id: string): Promise<Deployment> => (await this.query(DeploymentDocument, { id })).deployment,
    list: (opts: ListOptions = {}): PageIterator<Deployment> =>
      new PageIterator(async (first, after, signal) => toPage((await this.query(DeploymentsDocument, { first, after }, signal)).deployments), opts),
  };

  // ---------- usage and billing ----------

  readonly usage = {
    /** Usage from the ledger in [from, to), grouped by service and hardware. */
    get: async (range: { from: Date | string; to: Date | string }): Promise<Usage> =>
      (await this.query(UsageDocument, { from: iso(range.from), to: iso(range.to) })).usage,
  };

  readonly bill = {
    /** The open billing period as it will be invoiced, with a line per meter. */
    current: async (): Promise<CurrentBill> => (await this.query(CurrentBillDocument, {})).currentBill,
  };

  readonly invoices = {
    /** The tenant's invoices, newest first. */
    list: async (): Promise<Invoice[]> => (await this.query(InvoicesDocument, {})).invoices,
    get: async (id: string): Promise<Invoice> => (await this.query(InvoiceDocument, { id })).invoice,
  };

  readonly spendLimit = {
    /** New jobs are refused with SPEND_LIMIT_REACHED once this month would pass it. */
    set: async (amountCents: number): Promise<Money> => (await this.mutate(SetSpendLimitDocument, { amountCents }, true)).setSpendLimit.spendLimit,
  };

  // ---------- platform operators ----------

  readonly operator = {
    nodes: async (): Promise<ClusterNode[]> => (await this.query(NodesDocument, {})).nodes,
    quotas: async (): Promise<Quota[]> => (await this.query(QuotasDocument, {})).quotas,
    setQuota: async (input: SetQuotaInput): Promise<QuotaSetting> => (await this.mutate(SetQuotaDocument, { input }, true)).setQuota,
  };
}

const iso = (d: Date | string) => (typeof d === 'string' ? d : d.toISOString());
