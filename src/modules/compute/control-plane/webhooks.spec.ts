import { WEBHOOK_RETRY_SCHEDULE, webhookRetryDelayMs } from './webhooks';

describe('webhook retry schedule', () => {
  it('waits 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h (unit 1 s), the last repeating', () => {
    const mid = () => 0.5; // no jitter
    expect([1, 2, 3, 4, 5, 6, 7, 8, 9].map((n) => webhookRetryDelayMs(n, 1000, mid))).toEqual(
      [5_000, 300_000, 1_800_000, 7_200_000, 18_000_000, 36_000_000, 36_000_000, 36_000_000, 36_000_000],
    );
    // Eight attempts (seven retries) span about 28 hours.
    expect(WEBHOOK_RETRY_SCHEDULE.reduce((a, b) => a + b, 0) / 3600).toBeCloseTo(27.6, 1);
  });

  it('jitters each wait by at most ±10%', () => {
    expect(webhookRetryDelayMs(1, 1000, () => 0)).toBe(4_500);
    expect(webhookRetryDelayMs(1, 1000, () => 0.999999)).toBe(5_500);
    expect(webhookRetryDelayMs(2, 100, () => 0.5)).toBe(30_000);
  });
});
