/* eslint-disable @typescript-eslint/no-require-imports */
import { RuntimeError, type JobContext } from './types';

/**
 * Service id -> runtime. Modules are required lazily so that a process only loads the libraries
 * of the services it runs (the main thread never loads tfjs, tesseract or the forecasters).
 */
export interface ServiceRuntime {
  isLoaded(): boolean;
  load(): Promise<void>;
  run(input: unknown, ctx: JobContext): Promise<unknown>;
}

let francLoaded = false;

type Input<T> = T & Record<string, unknown>;

const human = () => require('./vision/human') as typeof import('./vision/human');
const moderation = () => require('./vision/moderate') as typeof import('./vision/moderate');
const ocr = () => require('./vision/ocr') as typeof import('./vision/ocr');
const wink = () => require('./language/wink') as typeof import('./language/wink');
const entities = () => require('./language/entities') as typeof import('./language/entities');
const forecast = () => require('./forecast/index') as typeof import('./forecast/index');
const forecastLibs = () => require('./forecast/libs') as typeof import('./forecast/libs');

const winkRuntime = (run: (input: Input<{ text: string }>) => unknown): ServiceRuntime => ({
  isLoaded: () => wink().winkLoaded(),
  load: async () => void wink().loadWink(),
  run: async (input) => run(input as Input<{ text: string }>),
});

export const RUNTIMES: Record<string, ServiceRuntime> = {
  'vision.detect-objects': {
    isLoaded: () => human().objectsLoaded(),
    load: () => human().loadObjects(),
    run: (input) => human().detectObjects(input as Parameters<ReturnType<typeof human>['detectObjects']>[0]),
  },
  'vision.faces': {
    isLoaded: () => human().facesLoaded(),
    load: () => human().loadFaces(),
    run: (input) => human().detectFaces(input as Parameters<ReturnType<typeof human>['detectFaces']>[0]),
  },
  'vision.moderate': {
    isLoaded: () => moderation().moderationLoaded(),
    load: () => moderation().loadModeration(),
    run: (input) => moderation().moderate(input as Parameters<ReturnType<typeof moderation>['moderate']>[0]),
  },
  'vision.ocr': {
    isLoaded: () => ocr().ocrLoaded(),
    load: async () => void (await ocr().loadOcr()),
    run: (input, ctx) => ocr().ocr(input as Parameters<ReturnType<typeof ocr>['ocr']>[0], ctx),
  },
  'language.sentiment': winkRuntime((i) => (require('./language/sentiment') as typeof import('./language/sentiment')).sentiment(i)),
  'language.keywords': winkRuntime((i) =>
    (require('./language/keywords') as typeof import('./language/keywords')).keywords(i as Input<{ text: string; maxResults?: number }>),
  ),
  'language.detect-language': {
    // franc builds its trigram tables on first require (~40 ms): that is its load.
    isLoaded: () => francLoaded,
    load: async () => {
      require('./language/detect-language');
      francLoaded = true;
    },
    run: async (input) => (require('./language/detect-language') as typeof import('./language/detect-language')).detectLanguage(input as { text: string }),
  },
  'language.entities': {
    isLoaded: () => wink().winkLoaded() && entities().compromiseLoaded(),
    load: async () => {
      wink().loadWink();
      entities().loadCompromise();
    },
    run: async (input) => entities().entities(input as { text: string }),
  },
  'forecast.auto': {
    isLoaded: () => forecastLibs().forecastLoaded(),
    load: async () => void forecastLibs().loadForecastLibs(),
    run: (input, ctx) => forecast().forecast(input as Parameters<ReturnType<typeof forecast>['forecast']>[0], ctx),
  },
  // Custom models: a training trial and a deployed model's prediction (libraries load per algorithm).
  'training.trial': {
    isLoaded: () => true,
    load: async () => undefined,
    run: (input, ctx) => (require('./training/trial') as typeof import('./training/trial')).runTrial(input as Parameters<typeof import('./training/trial').runTrial>[0], ctx),
  },
  'model.predict': {
    isLoaded: () => true,
    load: async () => undefined,
    run: (input, ctx) => (require('./training/predict') as typeof import('./training/predict')).predictModel(input as Parameters<typeof import('./training/predict').predictModel>[0], ctx),
  },
  'system.echo': {
    isLoaded: () => true,
    load: async () => undefined,
    run: (input, ctx) => (require('./echo') as typeof import('./echo')).echo(input as Record<string, unknown>, ctx),
  },
};

export function runtimeFor(serviceId: string): ServiceRuntime {
  const r = RUNTIMES[serviceId];
  if (!r) throw new RuntimeError('UNKNOWN_SERVICE', `no runtime for service ${serviceId}`);
  return r;
}

const now = () => performance.now();
const ms = (x: number) => Math.round(x * 100) / 100;

/** Loads if needed, then runs; loadMs is 0 when the model was already warm. */
export async function runTimed(serviceId: string, input: unknown, ctx: JobContext): Promise<{ output: unknown; loadMs: number; runMs: number }> {
  const r = runtimeFor(serviceId);
  let loadMs = 0;
  if (!r.isLoaded()) {
    const t0 = now();
    try {
      await r.load();
    } catch (err) {
      throw new RuntimeError('MODEL_ERROR', `loading ${serviceId} failed: ${messageOf(err)}`);
    }
    loadMs = ms(now() - t0);
  }
  const t1 = now();
  try {
    const output = await r.run(input, ctx);
    return { output, loadMs, runMs: ms(now() - t1) };
  } catch (err) {
    if (err instanceof RuntimeError) throw err;
    throw new RuntimeError('MODEL_ERROR', `${serviceId} failed: ${messageOf(err)}`);
  }
}

/** Libraries reject with strings too (tesseract.js: "Image too large"). */
const messageOf = (err: unknown): string => (err instanceof Error ? err.message : String(err));
