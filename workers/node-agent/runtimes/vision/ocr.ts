import sharp from 'sharp';
import { createWorker, OEM, type Worker as TesseractWorker } from 'tesseract.js';
import { modulePath } from '../paths';
import { imageBytes, type ImagePayload } from './decode';
import type { JobContext } from '../types';

/**
 * tesseract.js runs recognition in its own worker thread (nested inside ours); one warm worker
 * per pool thread. Language data and core come from node_modules: nothing is downloaded.
 */
let worker: TesseractWorker | null = null;
let loading: Promise<TesseractWorker> | null = null;
let progress: ((p: number) => void) | null = null;

export const ocrLoaded = () => worker !== null;

export async function loadOcr(): Promise<TesseractWorker> {
  if (worker) return worker;
  loading ??= createWorker('eng', OEM.LSTM_ONLY, {
    langPath: modulePath('@tesseract.js-data/eng', '4.0.0_best_int'),
    corePath: modulePath('tesseract.js-core'),
    gzip: true,
    cacheMethod: 'none',
    logger: (m) => {
      if (m.status === 'recognizing text') progress?.(m.progress);
    },
    errorHandler: () => undefined,
  }).then((w) => (worker = w));
  return loading;
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
  const w = await loadOcr();
  progress = (p) => ctx.reportProgress(p);
  try {
    const { data } = await w.recognize(await ocrBytes(input.image), {}, { text: true, blocks: true });
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
  const w = worker;
  worker = null;
  loading = null;
  if (w) await w.terminate();
}
