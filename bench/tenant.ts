import { randomBytes } from 'node:crypto';
import type { Client } from 'pg';
import type { TenancyService } from '../src/modules/tenancy/tenancy.service';

/** A fresh tenant on the ENTERPRISE plan, so plan rate limits do not shape what a benchmark measures. */
export async function signUpBenchTenant(tenancy: TenancyService, owner: Client, name: string) {
  const signedUp = await tenancy.signUp({
    email: `bench-${randomBytes(6).toString('hex')}@example.test`, password: 'bench password 0123', tenantName: name,
  });
  await owner.query(`UPDATE tenants SET plan = 'ENTERPRISE' WHERE id = $1`, [signedUp.tenant.id]);
  tenancy.forgetTenantProfile(signedUp.tenant.id);
  return signedUp;
}
