import type { PriceSource } from '../services/services.service';
import { MS_PER_MINUTE, PICO_DIGITS, formatDecimal, parseDecimal, perMsPico } from './money';

export type PriceKind = 'PREDICTION' | 'TRAINING';
export type Hardware = 'CPU' | 'GPU';
export type Query = (sql: string, params?: unknown[]) => Promise<any[]>;

/** Trials of a training job bill at training prices. */
export const priceKindOf = (jobKind: string): PriceKind => (jobKind === 'PREDICTION' ? 'PREDICTION' : 'TRAINING');

/** A Stripe Billing Meter we own: one per (job kind, hardware class), counting device-milliseconds. */
export interface MeterDef {
  kind: PriceKind;
  hardware: Hardware;
  eventName: string;
  displayName: string;
  productId: string;
}

const meter = (kind: PriceKind, hardware: Hardware): MeterDef => ({
  kind, hardware,
  eventName: `nimbus_${kind.toLowerCase()}_${hardware.toLowerCase()}_ms`,
  displayName: `${kind === 'PREDICTION' ? 'Prediction' : 'Training'} ${hardware} time (device-ms)`,
  productId: `nimbus_${kind.toLowerCase()}_${hardware.toLowerCase()}`,
});

export const METERS: readonly MeterDef[] = [meter('PREDICTION', 'CPU'), meter('PREDICTION', 'GPU'), meter('TRAINING', 'CPU'), meter('TRAINING', 'GPU')];
export const meterKey = (kind: string, hardware: string) => `${priceKindOf(kind)}:${hardware}`;
export const meterOf = (kind: string, hardware: string): MeterDef => METERS.find((m) => m.kind === priceKindOf(kind) && m.hardware === hardware)!;

export interface Price {
  kind: PriceKind;
  hardware: Hardware;
  /** Cents per device-minute, as stored ("1.2"). */
  centsPerMinute: string;
  /** Pico-cents (10^-12 ¢) per device-millisecond: exact. */
  perMsPico: bigint;
  /** Cents per device-millisecond as a decimal string: the metered Stripe price's `unit_amount_decimal`. */
  perMsDecimal: string;
}

/**
 * The prices a tenant's Stripe subscription carries (`tenants.subscribed_prices`): cents per
 * device-minute by meter key ("PREDICTION:CPU" → "1.2"); null or absent before it has one.
 */
export type SubscribedPrices = Record<string, string> | null | undefined;

const TTL_MS = 5_000;

/**
 * The price book (table `price_book`, edited by operators), read through a short cache. A price
 * whose per-millisecond value needs more than 12 decimals is refused (and the table's CHECK refuses
 * to store it), so Stripe's invoice equals the ledger's cost to the cent.
 */
export class PriceBook implements PriceSource {
  private cached: { expires: number; prices: Promise<Map<string, Price>> } | null = null;
  /** Parsed subscribed prices (a handful of distinct values), by "meter=cents". */
  private readonly subscribedPrices = new Map<string, Price>();

  constructor(private readonly query: Query, private readonly ttlMs = TTL_MS) {}

  prices(): Promise<Map<string, Price>> {
    if (this.cached && this.cached.expires > Date.now()) return this.cached.prices;
    const prices = this.load();
    this.cached = { expires: Date.now() + this.ttlMs, prices };
    prices.catch(() => {
      if (this.cached?.prices === prices) this.cached = null;
    });
    return prices;
  }

  async price(jobKind: string, hardware: string): Promise<Price> {
    const p = (await this.prices()).get(meterKey(jobKind, hardware));
    if (!p) throw new Error(`no price for ${priceKindOf(jobKind)} on ${hardware} in the price book`);
    return p;
  }

  /**
   * What a tenant pays per device-millisecond: the price its Stripe subscription carries, which
   * is what Stripe invoices it (a price-book change makes new Prices for subscriptions created
   * after it; existing ones keep theirs), else, before it has a subscription, the price book's.
   */
  async priceFor(subscribed: SubscribedPrices, jobKind: string, hardware: string): Promise<Price> {
    const own = subscribed?.[meterKey(jobKind, hardware)];
    if (own === undefined) return this.price(jobKind, hardware);
    const key = `${meterKey(jobKind, hardware)}=${own}`;
    let p = this.subscribedPrices.get(key);
    if (!p) {
      p = toPrice(priceKindOf(jobKind), hardware as Hardware, own);
      if (this.subscribedPrices.size > 1000) this.subscribedPrices.clear();
      this.subscribedPrices.set(key, p);
    }
    return p;
  }

  /** PriceSource for `services { pricing }`: cents per minute. */
  async unitPriceCents(kind: 'PREDICTION' | 'TRAINING', hardware: 'CPU' | 'GPU'): Promise<number> {
    return Number((await this.price(kind, hardware)).centsPerMinute);
  }

  forget(): void {
    this.cached = null;
  }

  private async load(): Promise<Map<string, Price>> {
    const rows: Array<{ job_kind: PriceKind; hardware: Hardware; cents: string }> = await this.query(
      'SELECT job_kind, hardware, unit_amount_cents_per_minute::text AS cents FROM price_book',
    );
    const prices = new Map<string, Price>();
    for (const r of rows) prices.set(meterKey(r.job_kind, r.hardware), toPrice(r.job_kind, r.hardware, r.cents));
    return prices;
  }
}

function toPrice(kind: PriceKind, hardware: Hardware, cents: string): Price {
  const centsPerMinute = formatDecimal(parseDecimal(cents, 6), 6);
  const pico = perMsPico(centsPerMinute);
  return { kind, hardware, centsPerMinute, perMsPico: pico, perMsDecimal: formatDecimal(pico, PICO_DIGITS) };
}

/** Cents per device-minute of a Stripe price's per-millisecond `unit_amount_decimal`. */
export const centsPerMinuteOf = (perMsDecimal: string): string =>
  formatDecimal(parseDecimal(perMsDecimal, PICO_DIGITS) * MS_PER_MINUTE, PICO_DIGITS);
