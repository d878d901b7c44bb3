/**
 * Exact money arithmetic. Prices are decimal strings of cents; amounts are BigInt pico-cents
 * (10^-12 cent, Stripe's finest `unit_amount_decimal` step) until they are rounded to whole cents,
 * half up, the way Stripe rounds each invoice line. No floats touch money.
 */
export const PICO_DIGITS = 12;
export const PICO = 10n ** BigInt(PICO_DIGITS);
export const MS_PER_MINUTE = 60_000n;

/** A non-negative decimal string ("1.2", "0.00002") as an integer scaled by 10^scale; refuses more digits. */
export function parseDecimal(value: string, scale: number): bigint {
  const m = /^(\d+)(?:\.(\d+))?$/.exec(value.trim());
  if (!m) throw new Error(`not a non-negative decimal: "${value}"`);
  const frac = (m[2] ?? '').replace(/0+$/, '');
  if (frac.length > scale) throw new Error(`"${value}" has more than ${scale} decimals`);
  return BigInt(m[1]) * 10n ** BigInt(scale) + BigInt(frac.padEnd(scale, '0') || '0');
}

/** `value / 10^scale` as the shortest decimal string ("0.00002", "18"). */
export function formatDecimal(value: bigint, scale: number): string {
  const negative = value < 0n;
  const abs = negative ? -value : value;
  const base = 10n ** BigInt(scale);
  const whole = abs / base;
  const frac = (abs % base).toString().padStart(scale, '0').replace(/0+$/, '');
  return `${negative ? '-' : ''}${whole}${frac ? `.${frac}` : ''}`;
}

/** Pico-cents rounded to whole cents, half up (non-negative amounts). */
export function roundCents(pico: bigint): number {
  return Number((2n * pico + PICO) / (2n * PICO));
}

/**
 * The per-millisecond price in pico-cents of a per-minute price in cents. Throws when it is not a
 * whole number of pico-cents, i.e. when `unit_amount_decimal` would need more than 12 decimals.
 */
export function perMsPico(centsPerMinute: string): bigint {
  const perMinute = parseDecimal(centsPerMinute, PICO_DIGITS);
  if (perMinute % MS_PER_MINUTE !== 0n) {
    throw new Error(`price ${centsPerMinute} ¢/min is not a whole number of 10^-12 ¢ per millisecond; Stripe cannot bill it exactly`);
  }
  return perMinute / MS_PER_MINUTE;
}

export interface Money {
  amountCents: number;
  currency: string;
}

export const CURRENCY = 'usd';
export const money = (amountCents: number): Money => ({ amountCents, currency: CURRENCY });
