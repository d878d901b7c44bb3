import type { Database } from '../../platform/db/database';
import { hashPassword, sha256 } from './credentials';
import { ApiKey, Membership, Tenant, User } from './tenancy.entities';

/** A fixed, documented development key so the README's curl examples work after `npm start`. */
export const DEMO = {
  email: 'demo@nimbus.dev',
  password: 'demo-password-1',
  tenantName: 'Demo',
  tenantId: '00000000-0000-4000-8000-00000000de30',
  apiKey: 'nmb_demo0demo0de_DEMOKEYdoNotUseInProductionXXXXXXXXXXXXXXXX',
};

/**
 * Creates the demo tenant, its owner and an API key with every scope, once. Refused in production:
 * a well-known credential must never exist there.
 */
export async function seedDemo(db: Database, production: boolean): Promise<{ created: boolean }> {
  if (production) throw new Error('the demo seed is refused when NODE_ENV=production');
  return db.withSettings({ 'app.tenant_id': DEMO.tenantId, 'app.user_id': '00000000-0000-0000-0000-000000000000' }, async (m) => {
    if (await m.existsBy(Tenant, { id: DEMO.tenantId })) return { created: false };
    await m.insert(Tenant, { id: DEMO.tenantId, name: DEMO.tenantName, slug: 'demo', webhookSecret: `whsec_${Buffer.from(DEMO.tenantId).toString('base64')}` });
    const existing = await m.findOneBy(User, { email: DEMO.email });
    const user = existing ?? (await m.save(m.create(User, { email: DEMO.email, passwordHash: await hashPassword(DEMO.password) })));
    await m.insert(Membership, { tenantId: DEMO.tenantId, userId: user.id, role: 'OWNER' });
    await m.insert(ApiKey, {
      tenantId: DEMO.tenantId, name: 'demo', prefix: DEMO.apiKey.split('_')[1], secretHash: sha256(DEMO.apiKey),
      scopes: ['PREDICT', 'TRAIN', 'READ', 'BILLING', 'ADMIN'], createdBy: user.id,
    });
    return { created: true };
  });
}
