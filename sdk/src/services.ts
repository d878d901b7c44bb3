/**
 * Input and output JSON of the pre-tuned services (contract: services.md). `predict({ service })`
 * with one of these ids is typed with them; any other id takes a plain object and returns unknown.
 * Outputs may carry extra fields; the ones here are always present.
 */

/** A box in pixels of the original image. */
export interface Box { x: number; y: number; width: number; height: number }

/**
 * An image: base64 bytes (a `data:image/...;base64,` prefix is accepted), an `https://` URL or
 * `upload:<id>`. JPEG, PNG, WebP. `imageToInput()` turns a file or bytes into one.
 */
export type ImageInput = string;

export type SentimentLabel = 'positive' | 'neutral' | 'negative';
export type EntityType = 'PERSON' | 'PLACE' | 'ORGANIZATION' | 'DATE' | 'TIME' | 'MONEY' | 'PERCENT' | 'NUMBER' | 'EMAIL' | 'URL';

export interface ServiceInputs {
  'vision.detect-objects': { image: ImageInput; minScore?: number; maxResults?: number };
  'vision.faces': { image: ImageInput; embeddings?: boolean };
  'vision.moderate': { image: ImageInput };
  'vision.ocr': { image: ImageInput; language?: 'eng' };
  'language.sentiment': { text: string };
  'language.entities': { text: string };
  'language.keywords': { text: string; maxResults?: number };
  'language.detect-language': { text: string };
  'forecast.auto': { series: number[]; horizon: number; seasonality?: number; timestamps?: string[] };
  'system.echo': { message?: unknown; sleepMs?: number; progressSteps?: number; fail?: boolean };
}

export interface ServiceOutputs {
  'vision.detect-objects': { objects: Array<{ label: string; score: number; box: Box }>; width: number; height: number };
  'vision.faces': {
    faces: Array<{
      box: Box; score: number; age: number; gender: 'female' | 'male'; genderScore: number;
      emotion: string; emotions: Record<string, number>; embedding?: number[];
    }>;
  };
  'vision.moderate': { flagged: boolean; labels: Array<{ label: 'drawing' | 'hentai' | 'neutral' | 'porn' | 'sexy'; score: number }> };
  'vision.ocr': { text: string; confidence: number; lines: Array<{ text: string; confidence: number; box: Box }> };
  'language.sentiment': { score: number; label: SentimentLabel; sentences: Array<{ text: string; score: number; label: SentimentLabel }> };
  'language.entities': { entities: Array<{ text: string; type: EntityType; start: number; end: number }> };
  'language.keywords': { keywords: Array<{ text: string; score: number }> };
  'language.detect-language': { language: string; confidence: number; alternatives: Array<{ language: string; confidence: number }> };
  'forecast.auto': {
    model: string;
    forecast: Array<{ step: number; value: number; lower80: number; upper80: number; lower95: number; upper95: number }>;
    /**
     * Percentages (5.2 = 5.2%) of the rolling-origin backtest; null when the series is too short
     * to backtest, and mape also when the actuals are zero (it is undefined there).
     */
    backtest: { mape: number | null; smape: number | null };
  };
  'system.echo': { message: unknown };
}

export type ServiceId = keyof ServiceInputs;

/** The input of a service id: typed for the known ones, a plain object otherwise. */
export type InputFor<S extends string> = S extends ServiceId ? ServiceInputs[S] : Record<string, unknown>;
/** The output of a service id: typed for the known ones, unknown otherwise. */
export type OutputFor<S extends string> = S extends ServiceId ? ServiceOutputs[S] : unknown;

/** Custom models (`predict({ deployment })`). */
export interface DeploymentInput {
  rows?: Array<Record<string, unknown>>;
  /** Forecasting models. */
  horizon?: number;
}
export interface DeploymentOutput {
  predictions: Array<{ label?: string; probabilities?: Record<string, number>; value?: number; lower95?: number; upper95?: number }>;
  modelVersion: unknown;
}
