import { ApiKey, AuditEvent, Membership, Tenant, User } from '../../modules/tenancy/tenancy.entities';

/** Every TypeORM entity; a new domain adds its entities here. */
export const ENTITIES = [Tenant, User, Membership, ApiKey, AuditEvent];
