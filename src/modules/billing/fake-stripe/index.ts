export { startFakeStripe, signPayload, type FakeStripe, type FakeStripeOptions, type RecordedRequest } from './server';
export type { FaultMode, FaultRule } from './faults';
export type { FinalizeOptions } from './invoicing';
export type * from './objects';
