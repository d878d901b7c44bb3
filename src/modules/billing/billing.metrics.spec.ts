import { Registry } from 'prom-client';
import { BillingMetrics } from './billing.metrics';

describe('BillingMetrics', () => {
  it('fills the backlog gauges from one query per scrape', async () => {
    const registry = new Registry();
    const query = jest.fn(async () => [{ rows: '12', ms: '90500', lag: 42.5 }]);
    new BillingMetrics(registry, query);
    const text = await registry.metrics();
    expect(text).toMatch(/^nimbus_billing_unreported_rows 12$/m);
    expect(text).toMatch(/^nimbus_billing_unreported_usage_seconds 90\.5$/m);
    expect(text).toMatch(/^nimbus_billing_lag_seconds 42\.5$/m);
    expect(query).toHaveBeenCalledTimes(1);
  });

  it('gives NaN, not a failed scrape, when the database cannot be read', async () => {
    const registry = new Registry();
    new BillingMetrics(registry, async () => {
      throw new Error('connection refused');
    });
    const text = await registry.metrics();
    expect(text).toMatch(/^nimbus_billing_unreported_rows nan$/im); // prom-client writes "Nan"; Prometheus reads any case
    expect(text).toMatch(/^nimbus_billing_lag_seconds nan$/im);
    expect(text).toContain('# TYPE nimbus_billing_meter_events_total counter');
  });
});
