import { Tenancy1764000000000 } from './1764000000000-Tenancy';
import { Compute1764000100000 } from './1764000100000-Compute';
import { Billing1764000200000 } from './1764000200000-Billing';
import { Training1764000300000 } from './1764000300000-Training';
import { JobInsert1764000400000 } from './1764000400000-JobInsert';
import { RetentionIndex1764000500000 } from './1764000500000-RetentionIndex';
import { WebhookSecretRotation1764000600000 } from './1764000600000-WebhookSecretRotation';
import { WebhookSweepIndex1764000700000 } from './1764000700000-WebhookSweepIndex';
import { WebhookDeliveriesIndex1764000800000 } from './1764000800000-WebhookDeliveriesIndex';
import { WebhookDeliveriesRetention1764000900000 } from './1764000900000-WebhookDeliveriesRetention';
import { AuthLookup1764001000000 } from './1764001000000-AuthLookup';
import { UsageMonthTotals1764001100000 } from './1764001100000-UsageMonthTotals';
import { UsageDayTotals1764001200000 } from './1764001200000-UsageDayTotals';
import { RequestHash1764001300000 } from './1764001300000-RequestHash';
import { SubscribedPrices1764001400000 } from './1764001400000-SubscribedPrices';
import { BillingPeriodStart1764001500000 } from './1764001500000-BillingPeriodStart';

/** Listed explicitly (not globbed) so they load the same from TypeScript sources and compiled JS. */
export const MIGRATIONS = [Tenancy1764000000000, Compute1764000100000, Billing1764000200000, Training1764000300000, JobInsert1764000400000, RetentionIndex1764000500000,
  WebhookSecretRotation1764000600000, WebhookSweepIndex1764000700000, WebhookDeliveriesIndex1764000800000,
  WebhookDeliveriesRetention1764000900000, AuthLookup1764001000000, UsageMonthTotals1764001100000,
  UsageDayTotals1764001200000, RequestHash1764001300000, SubscribedPrices1764001400000,
  BillingPeriodStart1764001500000];
