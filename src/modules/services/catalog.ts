import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import type { z } from 'zod';
import { badInput } from '../../platform/errors';
import { parseWith, type PrepareOptions } from './inputs';
import * as s from './schemas';

export type { PrepareOptions } from './inputs';
export type { PreparedImage, ImageMediaType, ImageRef } from './images';
export { classifyAddress, isPublicAddress, type AddressClass } from './ip-policy';

export type ServiceKind = 'VISION' | 'LANGUAGE' | 'FORECAST' | 'SYSTEM';

export interface ServiceDefinition {
  id: string;
  kind: ServiceKind;
  name: string;
  description: string;
  modelName: string;
  modelVersion: string;
  modelLicense: string;
  /** All CPU today: no GPU path is verified offline. */
  hardware: 'CPU' | 'GPU';
  /** Multiplies the per-minute price of the price book. */
  priceMultiplier: number;
  inputSchema: z.ZodType;
  outputSchema: z.ZodType;
  inputExample: unknown;
  /** Vision: the longest side its model reads (beyond it, BAD_USER_INPUT on the image). */
  maxImageSide?: number;
}

interface PackageInfo {
  version: string;
  license: string;
}

/** Reads name/license from node_modules by walking up (some packages do not export package.json). */
function pkg(name: string): PackageInfo {
  let dir = __dirname;
  for (;;) {
    const file = join(dir, 'node_modules', name, 'package.json');
    if (existsSync(file)) {
      const json = JSON.parse(readFileSync(file, 'utf8')) as { version?: string; license?: string };
      return { version: json.version ?? 'unknown', license: json.license ?? 'unknown' };
    }
    const parent = dirname(dir);
    if (parent === dir) return { version: 'unknown', license: 'unknown' };
    dir = parent;
  }
}

const human = pkg('@vladmandic/human');
const nsfw = pkg('nsfwjs');
const tesseract = pkg('tesseract.js');
const wink = pkg('wink-nlp');
const compromise = pkg('compromise');
const franc = pkg('franc');
const arima = pkg('arima');
const augurs = pkg('@bsull/augurs');

// A 1x1 PNG keeps the examples valid without bloating the catalog.
const TINY_PNG = 'iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR4nGP4z8AAAAMBAQDJ/pLvAAAAAElFTkSuQmCC';

const def = (d: Omit<ServiceDefinition, 'hardware' | 'priceMultiplier'> & Partial<Pick<ServiceDefinition, 'priceMultiplier'>>): ServiceDefinition => ({
  hardware: 'CPU',
  priceMultiplier: 1,
  ...d,
});

export const SERVICES: readonly ServiceDefinition[] = Object.freeze([
  def({
    id: 'vision.detect-objects', kind: 'VISION', name: 'Object detection',
    description: 'Finds the 80 COCO object classes (person, car, dog, ...) with boxes in image pixels.',
    modelName: 'CenterNet (COCO) via @vladmandic/human', modelVersion: human.version, modelLicense: human.license,
    inputSchema: s.detectObjectsInput, outputSchema: s.detectObjectsOutput,
    inputExample: { image: TINY_PNG, minScore: 0.3, maxResults: 20 },
  }),
  def({
    id: 'vision.faces', kind: 'VISION', name: 'Face analysis',
    description: 'Detects faces with estimated age, gender and emotion; optional 1024-d embeddings.',
    modelName: 'BlazeFace + FaceRes + Emotion via @vladmandic/human', modelVersion: human.version, modelLicense: human.license,
    inputSchema: s.facesInput, outputSchema: s.facesOutput,
    inputExample: { image: 'https://example.com/photo.jpg', embeddings: false },
  }),
  def({
    id: 'vision.moderate', kind: 'VISION', name: 'Image moderation',
    description: 'Scores an image as drawing, hentai, neutral, porn or sexy and flags explicit content.',
    modelName: 'NSFWJS MobileNetV2', modelVersion: nsfw.version, modelLicense: nsfw.license,
    inputSchema: s.moderateInput, outputSchema: s.moderateOutput,
    inputExample: { image: TINY_PNG },
  }),
  def({
    id: 'vision.ocr', kind: 'VISION', name: 'Text recognition (OCR)',
    description: 'Reads printed English text, with per-line boxes and confidences.',
    modelName: 'Tesseract LSTM (eng, best_int) via tesseract.js', modelVersion: tesseract.version, modelLicense: tesseract.license,
    inputSchema: s.ocrInput, outputSchema: s.ocrOutput,
    inputExample: { image: 'upload:abc123', language: 'eng' },
    // Tesseract refuses a side over 32,767 pixels (Leptonica's limit), whatever the pixel count.
    maxImageSide: 32_767,
  }),
  def({
    id: 'language.sentiment', kind: 'LANGUAGE', name: 'Sentiment analysis',
    description: 'Document and per-sentence sentiment in [-1, 1] with a positive/neutral/negative label.',
    modelName: 'wink-nlp + wink-eng-lite-web-model', modelVersion: wink.version, modelLicense: wink.license,
    inputSchema: s.textInput, outputSchema: s.sentimentOutput,
    inputExample: { text: 'I love this product, but the delivery was slow.' },
  }),
  def({
    id: 'language.entities', kind: 'LANGUAGE', name: 'Entity extraction',
    description: 'People, places and organisations, plus dates, times, money, percentages, numbers, emails and URLs, with character offsets.',
    modelName: 'compromise + wink-nlp', modelVersion: `${compromise.version}+${wink.version}`, modelLicense: compromise.license,
    inputSchema: s.textInput, outputSchema: s.entitiesOutput,
    inputExample: { text: 'Ada Lovelace met Charles Babbage in London on 5 June 1833.' },
  }),
  def({
    id: 'language.keywords', kind: 'LANGUAGE', name: 'Keyword extraction',
    description: 'RAKE-style key phrases ranked by score, stop words removed.',
    modelName: 'RAKE over wink-nlp tokens', modelVersion: wink.version, modelLicense: wink.license,
    inputSchema: s.keywordsInput, outputSchema: s.keywordsOutput,
    inputExample: { text: 'Machine learning models forecast demand for cloud computing resources.', maxResults: 10 },
  }),
  def({
    id: 'language.detect-language', kind: 'LANGUAGE', name: 'Language identification',
    description: 'ISO 639-3 code of the text language with a confidence and alternatives.',
    modelName: 'franc (trigram profiles)', modelVersion: franc.version, modelLicense: franc.license,
    inputSchema: s.textInput, outputSchema: s.detectLanguageOutput,
    inputExample: { text: 'Das Wetter ist heute schön.' },
  }),
  def({
    id: 'forecast.auto', kind: 'FORECAST', name: 'Automatic forecasting',
    description: 'Picks the best of SARIMA, AutoARIMA, MSTL+ETS and ETS by rolling-origin backtest; 80% and 95% intervals.',
    modelName: 'arima (SARIMA/AutoARIMA) + augurs (ETS/MSTL)', modelVersion: `${arima.version}+${augurs.version}`, modelLicense: `${arima.license}; ${augurs.license}`,
    inputSchema: s.forecastInput, outputSchema: s.forecastOutput,
    inputExample: { series: [112, 118, 132, 129, 121, 135, 148, 148, 136, 119, 104, 118, 115, 126, 141, 135, 125, 149, 170, 170, 158, 133, 114, 140], horizon: 6, seasonality: 12 },
  }),
  def({
    id: 'system.echo', kind: 'SYSTEM', name: 'Echo',
    description: 'Returns its message; can sleep with progress, or fail on purpose (tests and benchmarks).',
    modelName: 'none', modelVersion: '1', modelLicense: 'UNLICENSED',
    inputSchema: s.echoInput, outputSchema: s.echoOutput,
    inputExample: { message: 'hello', sleepMs: 100, progressSteps: 4 },
  }),
]);

const BY_ID = new Map(SERVICES.map((d) => [d.id, d]));

export function getService(id: string): ServiceDefinition | undefined {
  return BY_ID.get(id);
}

/**
 * Validates and normalises raw client input into the payload a node runtime receives.
 * Throws AppError BAD_USER_INPUT whose extensions.field names the offending field.
 */
export async function prepareInput(serviceId: string, raw: unknown, opts: PrepareOptions = {}): Promise<unknown> {
  const service = BY_ID.get(serviceId);
  if (!service) throw badInput('service', `unknown service ${serviceId}`);
  return parseWith(service.inputSchema, raw, { ...opts, maxImageSide: service.maxImageSide }, service.kind === 'VISION');
}
