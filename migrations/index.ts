import { Tenancy1764000000000 } from './1764000000000-Tenancy';
import { Compute1764000100000 } from './1764000100000-Compute';

/** Listed explicitly (not globbed) so they load the same from TypeScript sources and compiled JS. */
export const MIGRATIONS = [Tenancy1764000000000, Compute1764000100000];
