import type { Worker as NodeWorker } from 'node:worker_threads';
import sharp from 'sharp';
import { createWorker, OEM, type Worker as TesseractWorker } from 'tesseract.js';
import { modulePath } from '../paths';
import { RuntimeError, type JobContext } from '../types';
import { imageBytes, type ImagePayload } from './decode';

/**
 * tesseract.js runs recognition in its own worker thread (nested inside ours); one warm worker
 * per pool thread. Language data and core come from node_modules: nothing is downloaded.
 */
interface Loaded {
  worker: TesseractWorker;
  /** Rejects when the nested worker exits (see watchExit); never settles otherwise. */
  exited: Promise<never>;
}
let loaded: Loaded | null = null;
/** The load in progress. A failed one is dropped, so the next call tries again. */
let loading: Promise<Loaded> | null = null;
let progress: ((p: number) => void) | null = null;

export const ocrLoaded = () => loaded !== null;

export interface OcrPaths {
  /** Where eng.traineddata.gz is read (default: the @tesseract.js-data/eng package). */
  langPath?: string;
}

export async function loadOcr(paths: OcrPaths = {}): Promise<TesseractWorker> {
  return (await ensureLoaded(paths)).worker;
}

function ensureLoaded(paths: OcrPaths = {}): Promise<Loaded> {
  if (loaded) return Promise.resolve(loaded);
  loading ??= start(paths).then(
    (l) => (loaded = l),
    (err: unknown) => {
      loading = null;
      throw err instanceof Error ? err : new Error(String(err));
    },
  );
  return loading;
}

/**
 * In two steps, so that a failed load fails and leaves nothing running: created with a language,
 * tesseract.js's createWorker settles only if its core fails to load; a language-data failure
 * (file missing or corrupt) reaches errorHandler alone and leaves it pending for good, its nested
 * worker alive. Created without one, the worker is ours at once; the language then loads through
 * reinitialize, which rejects on failure, and the worker is terminated. (A core that fails to load
 * still leaves its nested worker behind: createWorker hands out no handle then.)
 */
async function start(paths: OcrPaths): Promise<Loaded> {
  const worker = await createWorker([], OEM.LSTM_ONLY, {
    langPath: paths.langPath ?? modulePath('@tesseract.js-data/eng', '4.0.0_best_int'),
    corePath: modulePath('tesseract.js-core'),
    gzip: true,
    cacheMethod: 'none',
    logger: (m) => {
      if (m.status === 'recognizing text') progress?.(m.progress);
    },
    errorHandler: () => undefined, // each failure also rejects the call that caused it
  });
  try {
    await worker.reinitialize('eng', OEM.LSTM_ONLY);
  } catch (err) {
    await worker.terminate();
    throw err;
  }
  return { worker, exited: watchExit(worker) };
}

/**
 * tesseract.js does not watch its nested worker (it sets `onerror`, which Node's Worker never
 * calls): if that worker dies (out of memory, a wasm abort, terminated), the recognition in
 * progress never settles. The Node Worker it keeps as `worker` (not in its typings) tells: the
 * recognition then fails MODEL_ERROR and the next call loads a fresh one. Should a version lack that
 * handle, the pool bounds the wait instead: a cancel or the job's maxRunMs terminates our thread,
 * and its nested worker with it.
 */
function watchExit(worker: TesseractWorker): Promise<never> {
  const nested = (worker as unknown as { worker?: Partial<Pick<NodeWorker, 'once'>> | null }).worker;
  const exited = new Promise<never>((_, reject) => {
    if (typeof nested?.once !== 'function') return;
    let error = '';
    nested.once('error', (err: Error) => (error = `: ${err.message}`)); // listened to, or it would throw in this thread
    nested.once('exit', (code: number) => {
      if (loaded?.worker === worker) {
        loaded = null;
        loading = null;
      }
      reject(new RuntimeError('MODEL_ERROR', `the tesseract worker exited (code ${code})${error}; OCR loads again on the next call`));
    });
  });
  exited.catch(() => undefined); // rejects also when no recognition is waiting on it
  return exited;
}

interface Bbox {
  x0: number;
  y0: number;
  x1: number;
  y1: number;
}
interface Line {
  text: string;
  confidence: number;
  bbox: Bbox;
}

/** Tesseract ignores EXIF orientation and may lack WebP: hand it an upright PNG in those cases. */
async function ocrBytes(image: ImagePayload): Promise<Buffer> {
  const bytes = imageBytes(image);
  if (image.mediaType === 'image/webp') return sharp(bytes).autoOrient().png().toBuffer();
  if (image.mediaType === 'image/jpeg') {
    const { orientation } = await sharp(bytes).metadata();
    if (orientation && orientation > 1) return sharp(bytes).autoOrient().png().toBuffer();
  }
  return bytes;
}

const r2 = (x: number) => Math.round(x * 100) / 100;

export async function ocr(input: { image: ImagePayload }, ctx: Pick<JobContext, 'reportProgress'>) {
  const { worker, exited } = await ensureLoaded();
  progress = (p) => ctx.reportProgress(p);
  try {
    const bytes = await ocrBytes(input.image);
    const { data } = await Promise.race([worker.recognize(bytes, {}, { text: true, blocks: true }), exited]);
    const lines: Line[] = (data.blocks ?? []).flatMap((b) => b.paragraphs.flatMap((p) => p.lines as Line[]));
    return {
      text: data.text.trim(),
      confidence: r2(data.confidence),
      lines: lines
        .map((l) => ({
          text: l.text.trim(),
          confidence: r2(l.confidence),
          box: { x: l.bbox.x0, y: l.bbox.y0, width: l.bbox.x1 - l.bbox.x0, height: l.bbox.y1 - l.bbox.y0 },
        }))
        .filter((l) => l.text.length > 0),
    };
  } finally {
    progress = null;
  }
}

export async function closeOcr(): Promise<void> {
  const l = loaded;
  loaded = null;
  loading = null;
  if (l) await l.worker.terminate();
}
