import type { z } from 'zod';
import { badInput } from '../../platform/errors';
import { checkImage, prepareImage, type CheckedImage, type ImageRef, type ImageSourceOptions } from './images';

export interface PrepareOptions extends ImageSourceOptions {
  /**
   * Stores a checked image and returns the reference the job's input holds instead of its bytes.
   * Without it the image is inlined as base64 (the runtime's direct callers: tests, benchmarks).
   */
  storeImage?: (image: CheckedImage) => Promise<ImageRef>;
}

type PathKey = PropertyKey;

/** 'input.series[3]', 'input.image', 'input' for the root. */
export function fieldPath(path: readonly PathKey[]): string {
  let out = 'input';
  for (const key of path) out += typeof key === 'number' ? `[${key}]` : `.${String(key)}`;
  return out;
}

/** Maps the first zod issue to BAD_USER_INPUT naming the offending field. */
export function toBadInput(error: z.ZodError) {
  const issue = error.issues[0];
  if (!issue) return badInput('input', 'invalid input');
  if (issue.code === 'unrecognized_keys') {
    const key = issue.keys[0] ?? '?';
    return badInput(fieldPath([...issue.path, key]), 'unknown field');
  }
  if (issue.code === 'invalid_type' && issue.path.length === 0) {
    return badInput('input', 'input must be a JSON object');
  }
  return badInput(fieldPath(issue.path), issue.message);
}

/**
 * Parses raw input with a strict schema and resolves the `image` field when the schema has one.
 * The schema takes only a string there, so a client can never hand in a stored reference itself;
 * the image is stored (opts.storeImage) only after every check passed.
 */
export async function parseWith<S extends z.ZodType>(schema: S, raw: unknown, opts: PrepareOptions, hasImage: boolean): Promise<unknown> {
  const parsed = schema.safeParse(raw ?? {});
  if (!parsed.success) throw toBadInput(parsed.error);
  const value = parsed.data as Record<string, unknown>;
  if (!hasImage) return value;
  const image = opts.storeImage
    ? await opts.storeImage(await checkImage(String(value.image), opts))
    : await prepareImage(String(value.image), opts);
  return { ...value, image };
}
