import type { Json } from './fixtures';

/**
 * The objects the fake stores, as they go over the wire (JSON: decimals are strings, times are Unix seconds).
 * Only the fields the fake itself reads are typed; the rest come from the fixture shapes.
 */
export type Metadata = Record<string, string>;

export interface ApiListObj<T> extends Json { object: 'list'; data: T[]; has_more: boolean; url: string }

export interface CustomerObj extends Json {
  id: string; object: 'customer'; created: number; email: string | null; name: string | null; metadata: Metadata;
  currency: string | null; invoice_prefix: string; next_invoice_sequence: number;
}

export interface ProductObj extends Json { id: string; object: 'product'; name: string; active: boolean; created: number; metadata: Metadata }

export type Interval = 'day' | 'week' | 'month' | 'year';

export interface PriceObj extends Json {
  id: string; object: 'price'; product: string; currency: string; active: boolean; created: number;
  unit_amount: number | null; unit_amount_decimal: string; lookup_key: string | null; metadata: Metadata;
  type: 'one_time' | 'recurring';
  recurring: { interval: Interval; interval_count: number; usage_type: 'licensed' | 'metered'; meter: string | null; trial_period_days: null } | null;
}

export type Formula = 'sum' | 'count' | 'last';

export interface MeterObj extends Json {
  id: string; object: 'billing.meter'; display_name: string; event_name: string; status: 'active' | 'inactive';
  created: number; updated: number;
  default_aggregation: { formula: Formula };
  customer_mapping: { event_payload_key: string; type: 'by_id' };
  value_settings: { event_payload_key: string };
  status_transitions: { deactivated_at: number | null };
}

export interface SubscriptionItemObj extends Json {
  id: string; object: 'subscription_item'; subscription: string; price: PriceObj; quantity?: number;
  created: number; current_period_start: number; current_period_end: number; metadata: Metadata;
}

export interface SubscriptionObj extends Json {
  id: string; object: 'subscription'; customer: string; currency: string; created: number; start_date: number;
  billing_cycle_anchor: number; status: 'active' | 'canceled'; canceled_at: number | null; ended_at: number | null;
  metadata: Metadata; items: ApiListObj<SubscriptionItemObj>;
}

export interface LineItemObj extends Json {
  id: string; object: 'line_item'; amount: number; currency: string; quantity: number | null; period: { start: number; end: number };
}

export interface InvoiceObj extends Json {
  id: string; object: 'invoice'; customer: string; currency: string; status: 'draft' | 'open' | 'paid';
  created: number; period_start: number; period_end: number; total: number; number: string | null;
  lines: ApiListObj<LineItemObj>;
}

export interface EventObj extends Json { id: string; object: 'event'; type: string; created: number; data: { object: object } }

/** An accepted (deduplicated) meter event, with the value already parsed. */
export interface MeterEventRecord {
  identifier: string;
  eventName: string;
  meterId: string;
  customerId: string;
  value: number;
  /** Unix seconds: when the usage happened (the event's `timestamp`). */
  timestamp: number;
  /** Unix ms: when the fake received it (the deduplication window runs from here). */
  receivedAt: number;
  via: MeterEventVia;
  payload: Record<string, string>;
}
export type MeterEventVia = 'v1' | 'v2' | 'v2_stream';

/** Stripe's meter error-report codes (`v1.billing.meter.error_report_triggered`), plus the fake's own duplicate marker. */
export type MeterEventErrorCode =
  | 'no_meter' | 'archived_meter' | 'meter_event_no_customer_defined' | 'meter_event_customer_not_found'
  | 'meter_event_invalid_value' | 'timestamp_in_future' | 'timestamp_too_far_in_past' | 'duplicate_identifier';

/** A meter event the fake refused: answered with a 400 on the single-event endpoints, dropped silently on the stream. */
export interface MeterEventError {
  code: MeterEventErrorCode;
  message: string;
  identifier: string | undefined;
  eventName: string | undefined;
  via: MeterEventVia;
  at: number;
}

export interface MeterEventSessionRecord { id: string; token: string; created: number; expiresAt: number }

/** Everything the fake holds, for tests to inspect. Maps keep creation order. */
export interface FakeStripeState {
  customers: Map<string, CustomerObj>;
  products: Map<string, ProductObj>;
  prices: Map<string, PriceObj>;
  meters: Map<string, MeterObj>;
  /** Accepted meter events: duplicates (same identifier within 24 h) are not here. */
  meterEvents: MeterEventRecord[];
  meterEventErrors: MeterEventError[];
  /** By authentication token. */
  meterEventSessions: Map<string, MeterEventSessionRecord>;
  subscriptions: Map<string, SubscriptionObj>;
  /** Finalized invoices; previews are computed on request and never stored, as in Stripe. */
  invoices: Map<string, InvoiceObj>;
  /** Events sent with `emitWebhook`, also served by `GET /v1/events`. */
  events: Map<string, EventObj>;
}

export function emptyState(): FakeStripeState {
  return {
    customers: new Map(), products: new Map(), prices: new Map(), meters: new Map(), meterEvents: [], meterEventErrors: [],
    meterEventSessions: new Map(), subscriptions: new Map(), invoices: new Map(), events: new Map(),
  };
}
