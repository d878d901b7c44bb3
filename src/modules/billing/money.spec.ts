import { lineAmount } from './fake-stripe/invoicing';
import { PICO, formatDecimal, parseDecimal, perMsPico, roundCents } from './money';

describe('money', () => {
  it('parses and formats decimals exactly', () => {
    expect(parseDecimal('1.2', 6)).toBe(1_200_000n);
    expect(parseDecimal('1.200000', 6)).toBe(1_200_000n);
    expect(parseDecimal('18', 12)).toBe(18n * PICO);
    expect(() => parseDecimal('0.0000001', 6)).toThrow(/more than 6 decimals/);
    expect(() => parseDecimal('-1', 6)).toThrow();
    expect(formatDecimal(20_000_000n, 12)).toBe('0.00002');
    expect(formatDecimal(18n * PICO, 12)).toBe('18');
    expect(formatDecimal(1_050n, 3)).toBe('1.05');
  });

  it('turns per-minute prices into exact per-millisecond prices, refusing those Stripe cannot hold', () => {
    expect(formatDecimal(perMsPico('1.2'), 12)).toBe('0.00002');
    expect(formatDecimal(perMsPico('18'), 12)).toBe('0.0003');
    expect(formatDecimal(perMsPico('2.4'), 12)).toBe('0.00004');
    expect(formatDecimal(perMsPico('24'), 12)).toBe('0.0004');
    expect(formatDecimal(perMsPico('0.06'), 12)).toBe('0.000001');
    // 1 ¢/min is 0.0000166… ¢/ms: not billable exactly; a price must be a multiple of 0.000003 ¢/min.
    for (const bad of ['1', '0.1', '1.000001']) expect(() => perMsPico(bad)).toThrow(/not a whole number of 10\^-12/);
    expect(formatDecimal(perMsPico('0.000003'), 12)).toBe('0.00000000005');
  });

  it('rounds half up to the cent', () => {
    expect(roundCents(15n * PICO / 10n)).toBe(2);
    expect(roundCents(149n * PICO / 100n)).toBe(1);
    expect(roundCents(0n)).toBe(0);
  });

  it('bills exactly what Stripe would: quantity × unit_amount_decimal rounded per line', () => {
    let seed = 7;
    const next = () => (seed = (seed * 1103515245 + 12345) % 2 ** 31);
    for (const price of ['1.2', '18', '2.4', '24', '0.06', '7.5', '123.45']) {
      const pico = perMsPico(price);
      const decimal = formatDecimal(pico, 12);
      for (let i = 0; i < 500; i++) {
        const ms = next() * (i % 3 === 0 ? 1000 : 1);
        expect(roundCents(BigInt(ms) * pico)).toBe(lineAmount(ms, decimal));
      }
    }
  });
});
