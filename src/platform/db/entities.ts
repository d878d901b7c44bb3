import { ApiKey, AuditEvent, Membership, Tenant, User } from '../../modules/tenancy/tenancy.entities';
import { Job, NodeRecord, Quota, UsageRecord, WebhookDelivery } from '../../modules/compute/compute.entities';

/** Every TypeORM entity; a new domain adds its entities here. */
export const ENTITIES = [Tenant, User, Membership, ApiKey, AuditEvent, Job, UsageRecord, NodeRecord, Quota, WebhookDelivery];
