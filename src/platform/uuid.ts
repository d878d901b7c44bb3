// No imports: node agents and worker threads load this (through the artifact store's key checks).

/** A UUID's text (lower-case hex), for composing patterns (e.g. storage keys). */
export const UUID_PATTERN = '[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}';
const UUID_RE = new RegExp(`^${UUID_PATTERN}$`, 'i');

export const isUuid = (s: string) => UUID_RE.test(s);
