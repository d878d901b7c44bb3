import { z } from 'zod';

/** Zod schemas of services.md: raw client input (strict: unknown fields are errors) and outputs. */

export const MAX_TEXT_CHARS = 100_000;
export const MAX_SERIES_POINTS = 100_000;

const image = z.string({ error: 'image is required (base64, data URL, https URL or upload:<id>)' }).min(1, 'image is empty');

export const detectObjectsInput = z.strictObject({
  image,
  minScore: z.number().min(0).max(1).default(0.3),
  maxResults: z.number().int().min(1).max(100).default(20),
});
export const facesInput = z.strictObject({ image, embeddings: z.boolean().default(false) });
export const moderateInput = z.strictObject({ image });
export const ocrInput = z.strictObject({ image, language: z.literal('eng').default('eng') });

const text = z
  .string({ error: 'text is required' })
  .min(1, 'text is empty')
  .max(MAX_TEXT_CHARS, `text is longer than ${MAX_TEXT_CHARS} characters`)
  .refine((s) => s.trim().length > 0, 'text is only whitespace');

export const textInput = z.strictObject({ text });
export const keywordsInput = z.strictObject({ text, maxResults: z.number().int().min(1).max(100).default(10) });

export const forecastInput = z
  .strictObject({
    series: z.array(z.number({ error: 'must be a finite number' })).max(MAX_SERIES_POINTS),
    horizon: z.number().int().min(1).max(365),
    seasonality: z.number().int().min(2).optional(),
    timestamps: z.array(z.string()).optional(),
  })
  .superRefine((v, ctx) => {
    const n = v.series.length;
    const s = v.seasonality;
    if (n < 12 && !(s !== undefined && n >= 2 * s)) {
      ctx.addIssue({ code: 'custom', path: ['series'], message: `needs at least 12 points or 2 seasons, got ${n}` });
    }
    if (s !== undefined && s > n) {
      ctx.addIssue({ code: 'custom', path: ['seasonality'], message: `period ${s} is longer than the series (${n} points)` });
    }
    if (v.timestamps && v.timestamps.length !== n) {
      ctx.addIssue({ code: 'custom', path: ['timestamps'], message: `must have the same length as series (${n}), got ${v.timestamps.length}` });
    }
  });

export const echoInput = z.strictObject({
  message: z.unknown().optional(),
  sleepMs: z.number().int().min(0).max(600_000).default(0),
  progressSteps: z.number().int().min(1).max(1000).optional(),
  fail: z.boolean().default(false),
});

// ---- outputs -------------------------------------------------------------------------------
const box = z.object({ x: z.number(), y: z.number(), width: z.number(), height: z.number() });
const unit = z.number().min(0).max(1);

export const detectObjectsOutput = z.object({
  objects: z.array(z.object({ label: z.string(), score: unit, box })),
  width: z.number().int(),
  height: z.number().int(),
});
export const facesOutput = z.object({
  faces: z.array(
    z.object({
      box,
      score: unit,
      age: z.number(),
      gender: z.enum(['female', 'male']),
      genderScore: unit,
      emotion: z.string(),
      emotions: z.record(z.string(), unit),
      embedding: z.array(z.number()).optional(),
    }),
  ),
});
export const moderateOutput = z.object({
  flagged: z.boolean(),
  labels: z.array(z.object({ label: z.enum(['drawing', 'hentai', 'neutral', 'porn', 'sexy']), score: unit })),
});
export const ocrOutput = z.object({
  text: z.string(),
  confidence: z.number().min(0).max(100),
  lines: z.array(z.object({ text: z.string(), confidence: z.number().min(0).max(100), box })),
});

const polarity = z.enum(['positive', 'neutral', 'negative']);
const signed = z.number().min(-1).max(1);
export const sentimentOutput = z.object({
  score: signed,
  label: polarity,
  sentences: z.array(z.object({ text: z.string(), score: signed, label: polarity })),
});
export const ENTITY_TYPES = ['PERSON', 'PLACE', 'ORGANIZATION', 'DATE', 'TIME', 'MONEY', 'PERCENT', 'NUMBER', 'EMAIL', 'URL'] as const;
export const entitiesOutput = z.object({
  entities: z.array(z.object({ text: z.string(), type: z.enum(ENTITY_TYPES), start: z.number().int(), end: z.number().int() })),
});
export const keywordsOutput = z.object({ keywords: z.array(z.object({ text: z.string(), score: z.number() })) });
export const detectLanguageOutput = z.object({
  language: z.string().regex(/^([a-z]{3})$/),
  confidence: unit,
  alternatives: z.array(z.object({ language: z.string(), confidence: unit })),
});
export const forecastOutput = z.object({
  model: z.string(),
  forecast: z.array(
    z.object({
      step: z.number().int(),
      value: z.number(),
      lower80: z.number(),
      upper80: z.number(),
      lower95: z.number(),
      upper95: z.number(),
    }),
  ),
  backtest: z.object({ mape: z.number().nullable(), smape: z.number().nullable() }),
});
export const echoOutput = z.object({ message: z.unknown() });
