import { badInput, notFound } from '../../platform/errors';
import type { ResolvedTarget } from '../compute/jobs.service';
import type { Principal } from '../tenancy/principal';
import { SERVICES, getService, prepareInput, type PrepareOptions } from './catalog';
import type { ImageInputStore } from './image-store';
import type { ImageRef } from './images';

/** Price of a usage minute for (job kind, hardware); implemented by billing's price book. */
export interface PriceSource {
  unitPriceCents(kind: 'PREDICTION' | 'TRAINING', hardware: 'CPU' | 'GPU'): Promise<number>;
}

/** The pre-tuned service catalog as the API serves it, and service references resolved to jobs. */
export class ServicesService {
  constructor(
    private readonly prices: PriceSource,
    private readonly prepare: PrepareOptions = {},
    /** Where vision inputs' bytes go (the job's input then holds a reference); without it they are inlined as base64. */
    private readonly images?: ImageInputStore,
  ) {}

  async list() {
    return Promise.all(SERVICES.map(async (s) => {
      const base = await this.prices.unitPriceCents('PREDICTION', s.hardware);
      return {
        id: s.id, kind: s.kind, name: s.name, description: s.description, modelName: s.modelName, modelVersion: s.modelVersion,
        modelLicense: s.modelLicense, hardware: s.hardware, inputExample: s.inputExample,
        pricing: { unit: `${s.hardware} minute`, unitAmountCents: formatCents(base * s.priceMultiplier) },
      };
    }));
  }

  /**
   * Validates a predict call's service and input; deployments are resolved by the training module.
   * A vision input's image is stored under the caller's tenant once it has passed every check; the
   * target's `discard` deletes it again when no job will read it (the call was refused, or it
   * repeated an idempotency key).
   */
  async resolve(p: Principal, ref: { service?: string; deployment?: string }, input: unknown): Promise<ResolvedTarget> {
    if (ref.deployment !== undefined) throw notFound('Deployment');
    const service = getService(ref.service!);
    if (!service) throw badInput('input.service', `unknown service "${ref.service}"; see the services query`);
    const images = this.images;
    const stored: ImageRef[] = [];
    const opts: PrepareOptions = images
      ? { ...this.prepare, storeImage: async (img) => { const ref = await images.put(p.tenantId, img); stored.push(ref); return ref; } }
      : this.prepare;
    return {
      service: service.id, input: await prepareInput(service.id, input, opts), hardware: service.hardware, devices: 1,
      ...(images && stored.length ? { discard: () => Promise.all(stored.map((r) => images.discard(r))).then(() => undefined) } : {}),
    };
  }
}

/** Decimal string of cents with no float noise (unit prices may be fractions of a cent). */
export const formatCents = (cents: number) => String(Number(cents.toFixed(6)));
