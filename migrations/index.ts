import { Tenancy1764000000000 } from './1764000000000-Tenancy';

/** Listed explicitly (not globbed) so they load the same from TypeScript sources and compiled JS. */
export const MIGRATIONS = [Tenancy1764000000000];
