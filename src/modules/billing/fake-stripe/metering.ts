import { createHash, randomUUID } from 'node:crypto';
import { ApiError, invalid, newId, type Param, Reader } from './codec';
import type { Json } from './fixtures';
import type { ApiListObj, MeterEventError, MeterEventErrorCode, MeterEventRecord, MeterEventVia, MeterObj } from './objects';
import type { Store } from './store';

const DEDUPE_WINDOW_MS = 24 * 3600_000;
const MAX_PAST_S = 35 * 86_400;
const MAX_FUTURE_S = 5 * 60;
const SESSION_TTL_MS = 15 * 60_000;
const STREAM_MAX_EVENTS = 100;

interface MeterEventInput {
  eventName: string;
  payload: Record<string, string>;
  identifier: string | undefined;
  /** Unix seconds; now when absent. */
  timestamp: number | undefined;
}

/** Where a refusal points on the single-event endpoints. */
const PARAM: Record<MeterEventErrorCode, string> = {
  no_meter: 'event_name', archived_meter: 'event_name', meter_event_no_customer_defined: 'payload',
  meter_event_customer_not_found: 'payload', meter_event_invalid_value: 'payload', timestamp_in_future: 'timestamp',
  timestamp_too_far_in_past: 'timestamp', duplicate_identifier: 'identifier',
};

/**
 * Meter events, their deduplication and aggregation. Stripe aggregates asynchronously (summaries and invoice
 * previews lag by minutes); here every accepted event counts at once, so tests are deterministic.
 */
export class Metering {
  /** identifier → when it was first accepted (ms), for the rolling 24 h uniqueness window. */
  private readonly seen = new Map<string, number>();

  constructor(private readonly store: Store) {}

  /**
   * `POST /v1/billing/meter_events`. Stripe validates the basics synchronously; the fake also refuses the
   * conditions Stripe reports later (unknown event name, unknown customer, bad value) with a 400 carrying the
   * error-report code, so callers see them. A reused `identifier` inside 24 h is refused with 400
   * `resource_already_exists` (Stripe answers "An event already exists with identifier …" and
   * `Stripe-Should-Retry: false`): the usage is already recorded, so a reporter must count it as delivered.
   */
  createV1(r: Reader): Json {
    r.only(['event_name', 'payload', 'identifier', 'timestamp']);
    const event = this.acceptOrThrow({
      eventName: r.reqStr('event_name'), payload: r.dict('payload') ?? {}, identifier: r.str('identifier'), timestamp: r.int('timestamp'),
    }, 'v1');
    return this.store.fixtures.build('billing.meter_event', {
      object: 'billing.meter_event', created: Math.floor(event.receivedAt / 1000), event_name: event.eventName,
      identifier: event.identifier, livemode: false, payload: event.payload, timestamp: event.timestamp,
    });
  }

  /** `POST /v2/billing/meter_events` (JSON, ISO-8601 times); same rules as v1. */
  createV2(r: Reader): Json {
    const event = this.acceptOrThrow(this.v2Input(r.only(['event_name', 'payload', 'identifier', 'timestamp']), ''), 'v2');
    return {
      object: 'v2.billing.meter_event', created: new Date(event.receivedAt).toISOString(), event_name: event.eventName,
      identifier: event.identifier, livemode: false, payload: event.payload, timestamp: new Date(event.timestamp * 1000).toISOString(),
    };
  }

  /**
   * `POST /v2/billing/meter_event_stream`: up to 100 events. As in Stripe, events are validated asynchronously:
   * the request succeeds and refused events (duplicates included) only land in `state.meterEventErrors`.
   */
  stream(r: Reader): Json {
    const events = r.only(['events']).list('events');
    if (events.length === 0 || events.length > STREAM_MAX_EVENTS) {
      throw new ApiError(400, 'invalid_request_error', `events must hold 1 to ${STREAM_MAX_EVENTS} events.`, 'invalid_fields', 'events');
    }
    const inputs = events.map((e, i) => this.v2Input(e.only(['event_name', 'payload', 'identifier', 'timestamp']), `events[${i}].`));
    for (const input of inputs) this.ingest(input, 'v2_stream');
    return {};
  }

  createSession(): Json {
    const now = this.store.nowMs();
    const session = { id: newId('mes', 24), token: newId('mes_token', 40), created: now, expiresAt: now + SESSION_TTL_MS };
    this.store.state.meterEventSessions.set(session.token, session);
    return {
      id: session.id, object: 'v2.billing.meter_event_session', authentication_token: session.token,
      created: new Date(session.created).toISOString(), expires_at: new Date(session.expiresAt).toISOString(), livemode: false,
    };
  }

  /** The stream takes the session token as its bearer key, never an `sk_` key; an expired one is `temporary_session_expired`. */
  authenticateStream(token: string | undefined): void {
    const session = token ? this.store.state.meterEventSessions.get(token) : undefined;
    if (!session) throw new ApiError(401, 'invalid_request_error', 'Invalid meter event session authentication token.', 'invalid_api_key');
    if (session.expiresAt <= this.store.nowMs()) {
      throw new ApiError(401, 'temporary_session_expired', 'The meter event session has expired: create a new one.', 'billing_meter_event_session_expired');
    }
  }

  private v2Input(r: Reader, at: string): MeterEventInput {
    const payload = r.params.payload ?? {};
    const strings = typeof payload === 'object' && payload !== null && !Array.isArray(payload) &&
      Object.values(payload).every((v: Param) => typeof v === 'string');
    if (!strings) throw new ApiError(400, 'invalid_request_error', `${at}payload must be an object of strings.`, 'invalid_fields', `${at}payload`);
    const ts = r.str('timestamp');
    const ms = ts === undefined ? undefined : Date.parse(ts);
    if (ms !== undefined && Number.isNaN(ms)) throw new ApiError(400, 'invalid_request_error', `${at}timestamp must be an ISO-8601 time.`, 'invalid_fields', `${at}timestamp`);
    return { eventName: r.reqStr('event_name'), payload: payload as Record<string, string>, identifier: r.str('identifier'), timestamp: ms === undefined ? undefined : Math.floor(ms / 1000) };
  }

  private acceptOrThrow(input: MeterEventInput, via: MeterEventVia): MeterEventRecord {
    const result = this.ingest(input, via);
    if ('value' in result) return result;
    const code = result.code === 'duplicate_identifier' ? 'resource_already_exists' : result.code;
    const headers: Record<string, string> = result.code === 'duplicate_identifier' ? { 'Stripe-Should-Retry': 'false' } : {};
    throw new ApiError(400, 'invalid_request_error', result.message, code, PARAM[result.code], headers);
  }

  /** Validates one event and records it, or records why not. */
  private ingest(input: MeterEventInput, via: MeterEventVia): MeterEventRecord | MeterEventError {
    const nowMs = this.store.nowMs();
    const refuse = (code: MeterEventErrorCode, message: string): MeterEventError => {
      const error = { code, message, identifier: input.identifier, eventName: input.eventName, via, at: nowMs };
      this.store.state.meterEventErrors.push(error);
      return error;
    };
    const meters = [...this.store.state.meters.values()].filter((m) => m.event_name === input.eventName);
    const meter = meters.find((m) => m.status === 'active');
    if (!meter) {
      return meters.length > 0
        ? refuse('archived_meter', `The meter for event_name ${input.eventName} is inactive.`)
        : refuse('no_meter', `No active meter found for event_name ${input.eventName}.`);
    }
    const customerKey = meter.customer_mapping.event_payload_key;
    const customerId = input.payload[customerKey];
    if (!customerId) return refuse('meter_event_no_customer_defined', `Customer mapping key ${customerKey} not found in payload.`);
    if (!this.store.state.customers.has(customerId)) return refuse('meter_event_customer_not_found', `No such customer: '${customerId}'.`);

    let value = 1;
    if (meter.default_aggregation.formula !== 'count') {
      const key = meter.value_settings.event_payload_key;
      const raw = input.payload[key];
      // Integers only: the fake is stricter than Stripe here on purpose, since Nimbus reports whole units.
      if (raw === undefined || !/^\d+$/.test(raw) || !Number.isSafeInteger(Number(raw))) {
        return refuse('meter_event_invalid_value', `Value for key ${key} must be a non-negative integer string, got ${JSON.stringify(raw ?? null)}.`);
      }
      value = Number(raw);
    }

    const now = Math.floor(nowMs / 1000);
    const timestamp = input.timestamp ?? now;
    if (timestamp > now + MAX_FUTURE_S) return refuse('timestamp_in_future', 'Timestamp must be no more than 5 minutes in the future.');
    if (timestamp < now - MAX_PAST_S) return refuse('timestamp_too_far_in_past', 'Timestamp must be within the past 35 calendar days.');

    const identifier = input.identifier ?? randomUUID();
    const firstSeen = this.seen.get(identifier);
    if (firstSeen !== undefined && nowMs - firstSeen < DEDUPE_WINDOW_MS) {
      return refuse('duplicate_identifier', `An event already exists with identifier ${identifier}.`);
    }
    this.seen.set(identifier, nowMs);
    const record: MeterEventRecord = {
      identifier, eventName: input.eventName, meterId: meter.id, customerId, value, timestamp, receivedAt: nowMs, via, payload: input.payload,
    };
    this.store.state.meterEvents.push(record);
    return record;
  }

  /** The meter's aggregate for `customerId` over events timestamped in [start, end) (Unix seconds). */
  aggregate(meter: MeterObj, customerId: string, start: number, end: number): number {
    const events = this.store.state.meterEvents.filter((e) => e.meterId === meter.id && e.customerId === customerId && e.timestamp >= start && e.timestamp < end);
    switch (meter.default_aggregation.formula) {
      case 'count':
        return events.length;
      case 'last':
        return events.reduce<MeterEventRecord | undefined>((last, e) => (!last || e.timestamp >= last.timestamp ? e : last), undefined)?.value ?? 0;
      default:
        return events.reduce((sum, e) => sum + e.value, 0);
    }
  }

  /** Sum of accepted event values for a meter (id or event name) and customer, `from` inclusive, `to` exclusive. */
  total(meterIdOrEventName: string, customerId: string, from?: Date, to?: Date): number {
    const start = from ? from.getTime() / 1000 : -Infinity;
    const end = to ? to.getTime() / 1000 : Infinity;
    return this.store.state.meterEvents
      .filter((e) => (e.meterId === meterIdOrEventName || e.eventName === meterIdOrEventName) && e.customerId === customerId)
      .filter((e) => e.timestamp >= start && e.timestamp < end)
      .reduce((sum, e) => sum + e.value, 0);
  }

  /** `GET /v1/billing/meters/:id/event_summaries`, newest window first. */
  summaries(meterId: string, r: Reader): ApiListObj<Json & { id: string }> {
    r.only(['customer', 'start_time', 'end_time', 'value_grouping_window', 'limit', 'starting_after', 'ending_before']);
    const meter = this.store.meter(meterId);
    const customer = this.store.customer(r.reqStr('customer')).id;
    const start = r.int('start_time') ?? requiredTime('start_time');
    const end = r.int('end_time') ?? requiredTime('end_time');
    const window = r.str('value_grouping_window');
    if (window !== undefined && window !== 'hour' && window !== 'day') throw invalid('value_grouping_window must be `hour` or `day`.', 'value_grouping_window');
    const step = window === 'day' ? 86_400 : window === 'hour' ? 3600 : 60;
    for (const [name, t] of [['start_time', start], ['end_time', end]] as const) {
      if (t % step !== 0) throw invalid(`${name} must be aligned with ${window ?? 'minute'} boundaries.`, name);
    }
    if (end <= start) throw invalid('end_time must be after start_time.', 'end_time');
    const windows: Array<[number, number]> = [];
    if (!window) windows.push([start, end]);
    else for (let t = start; t < end; t += step) windows.push([t, t + step]);
    const summaries = windows.reverse().map(([s, e]) => this.store.fixtures.build('billing.meter_event_summary', {
      id: `mtrusg_${createHash('sha1').update(`${meter.id}|${customer}|${s}|${e}`).digest('hex').slice(0, 24)}`,
      object: 'billing.meter_event_summary', aggregated_value: this.aggregate(meter, customer, s, e),
      start_time: s, end_time: e, meter: meter.id, livemode: false,
    }));
    return this.store.page(summaries, r, `/v1/billing/meters/${meter.id}/event_summaries`);
  }

  expireSessions(): void {
    for (const s of this.store.state.meterEventSessions.values()) s.expiresAt = Math.min(s.expiresAt, this.store.nowMs());
  }
}

function requiredTime(name: string): never {
  throw invalid(`Missing required param: ${name}.`, name, 'parameter_missing');
}
