import { readFileSync } from 'node:fs';
import { pathToFileURL } from 'node:url';
import sharp from 'sharp';
import { modulePath } from '../paths';
import { RuntimeError } from '../types';
import { decodeRgb, toTensor, type ImagePayload } from './decode';
import { initTf, tf, wasmDir } from './tf';

/** The slice of @vladmandic/human's API used here (its bundled tfjs types clash with tfjs-core's). */
type Box = [number, number, number, number];
interface HumanFace {
  score: number;
  box: Box;
  age?: number;
  gender?: string;
  genderScore?: number;
  emotion?: Array<{ score: number; emotion: string }>;
  embedding?: number[];
}
interface HumanObject {
  score: number;
  label: string;
  box: Box;
}
interface HumanResult {
  face: HumanFace[];
  object: HumanObject[];
  error?: string | null;
}
interface HumanInstance {
  load(config?: object): Promise<void>;
  detect(input: tf.Tensor, config?: object): Promise<HumanResult>;
}
type HumanCtor = new (config: object) => HumanInstance;

/** Face detections under this blazeface score are dropped (0.27 false positives seen on samples). */
export const FACE_MIN_SCORE = 0.4;

const FACE_ON = {
  enabled: true,
  detector: { enabled: true, rotation: false, maxDetected: 50, minConfidence: FACE_MIN_SCORE, return: false },
  mesh: { enabled: false }, iris: { enabled: false }, attention: { enabled: false },
  description: { enabled: true }, emotion: { enabled: true, minConfidence: 0 },
  antispoof: { enabled: false }, liveness: { enabled: false },
};
const FACE_OFF = { enabled: false };
const OBJECT_ON = { enabled: true, modelPath: 'centernet.json' };
const OBJECT_OFF = { enabled: false };

let human: HumanInstance | null = null;
const loaded = { faces: false, objects: false };

async function instance(): Promise<HumanInstance> {
  if (human) return human;
  await initTf();
  // Not exported by the package: required by file path. It shares our tfjs-core/wasm modules.
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const { Human } = require(modulePath('@vladmandic/human', 'dist', 'human.node-wasm.js')) as { Human: HumanCtor };
  human = new Human({
    backend: 'wasm',
    wasmPath: wasmDir(),
    modelBasePath: `${pathToFileURL(modulePath('@vladmandic/human', 'models')).href}/`,
    cacheSensitivity: 0, // otherwise near-identical inputs return the previous result
    cacheModels: false,
    warmup: 'none',
    debug: false,
    async: true,
    filter: { enabled: false },
    face: FACE_OFF, body: { enabled: false }, hand: { enabled: false }, object: OBJECT_OFF,
    gesture: { enabled: false }, segmentation: { enabled: false },
  });
  return human;
}

export const facesLoaded = () => loaded.faces;
export const objectsLoaded = () => loaded.objects;

/**
 * The first inference compiles wasm kernels (~200-400 ms): pay it at load time. The photo that
 * ships in human's assets has faces, so the age/gender and emotion models run too.
 */
async function warmUp(h: HumanInstance, config: object): Promise<void> {
  let frame: tf.Tensor;
  try {
    const { data, info } = await sharp(readFileSync(modulePath('@vladmandic/human', 'assets', 'samples.jpg')))
      .resize(640).removeAlpha().raw().toBuffer({ resolveWithObject: true });
    frame = toTensor({ data, width: info.width, height: info.height });
  } catch {
    frame = tf.zeros([1, 256, 256, 3], 'int32');
  }
  try {
    await h.detect(frame, config);
  } finally {
    frame.dispose();
  }
}

export async function loadFaces(): Promise<void> {
  if (loaded.faces) return;
  const h = await instance();
  await h.load({ face: FACE_ON, object: loaded.objects ? OBJECT_ON : OBJECT_OFF });
  await warmUp(h, { face: FACE_ON, object: OBJECT_OFF });
  loaded.faces = true;
}

export async function loadObjects(): Promise<void> {
  if (loaded.objects) return;
  const h = await instance();
  await h.load({ object: OBJECT_ON, face: loaded.faces ? FACE_ON : FACE_OFF });
  await warmUp(h, { face: FACE_OFF, object: OBJECT_ON });
  loaded.objects = true;
}

/**
 * The longest side Human is handed: its detectors resize a frame to their own input (CenterNet
 * 512, BlazeFace 256) anyway, and a full 50-megapixel frame as an int32 tensor took over 2 GB of a
 * thread's memory (7000 x 7000). Larger images are shrunk first; boxes come back in their pixels.
 */
const MAX_DETECT_SIDE = 2048;

/** Human merges per-call config into its own, so every call states all of it. */
async function detect(image: ImagePayload, config: object): Promise<{ result: HumanResult; width: number; height: number; scale: number }> {
  const h = await instance();
  const rgb = await decodeRgb(image, { maxSide: MAX_DETECT_SIDE });
  const tensor = toTensor(rgb);
  try {
    const result = await h.detect(tensor, config);
    if (result.error) throw new RuntimeError('MODEL_ERROR', `human: ${result.error}`);
    // The original's size (after EXIF orientation, as the API measured it) when it was shrunk.
    const shrunk = image.width > rgb.width || image.height > rgb.height;
    const width = shrunk ? image.width : rgb.width;
    const height = shrunk ? image.height : rgb.height;
    return { result, width, height, scale: width / rgb.width };
  } finally {
    tensor.dispose();
  }
}

const r1 = (x: number) => Math.round(x * 10) / 10;
const r4 = (x: number) => Math.round(x * 1e4) / 1e4;

/** Scales a human box to the original image's pixels, clamps it to the image and rounds it. */
function toBox([bx, by, bw, bh]: Box, width: number, height: number, scale = 1) {
  const [x, y, w, h] = [bx * scale, by * scale, bw * scale, bh * scale];
  const x0 = Math.max(0, x);
  const y0 = Math.max(0, y);
  return { x: r1(x0), y: r1(y0), width: r1(Math.min(width, x + w) - x0), height: r1(Math.min(height, y + h) - y0) };
}

export async function detectObjects(input: { image: ImagePayload; minScore?: number; maxResults?: number }) {
  const minScore = input.minScore ?? 0.3;
  const maxResults = input.maxResults ?? 20;
  const { result, width, height, scale } = await detect(input.image, {
    face: FACE_OFF,
    object: { ...OBJECT_ON, minConfidence: minScore, maxDetected: maxResults },
  });
  const objects = result.object
    .filter((o) => o.score >= minScore)
    .sort((a, b) => b.score - a.score)
    .slice(0, maxResults)
    .map((o) => ({ label: o.label, score: r4(o.score), box: toBox(o.box, width, height, scale) }));
  return { objects, width, height };
}

export async function detectFaces(input: { image: ImagePayload; embeddings?: boolean }) {
  const { result, width, height, scale } = await detect(input.image, { face: FACE_ON, object: OBJECT_OFF });
  const faces = result.face
    .filter((f) => f.score >= FACE_MIN_SCORE)
    .sort((a, b) => b.score - a.score)
    .map((f) => {
      const emotions: Record<string, number> = {};
      for (const e of f.emotion ?? []) emotions[e.emotion] = r4(e.score);
      const top = [...(f.emotion ?? [])].sort((a, b) => b.score - a.score)[0];
      return {
        box: toBox(f.box, width, height, scale),
        score: r4(f.score),
        age: r1(f.age ?? 0),
        gender: f.gender === 'male' ? ('male' as const) : ('female' as const),
        genderScore: r4(f.genderScore ?? 0),
        emotion: top?.emotion ?? 'neutral',
        emotions,
        ...(input.embeddings && f.embedding ? { embedding: Array.from(f.embedding, (v) => Math.round(v * 1e6) / 1e6) } : {}),
      };
    });
  return { faces };
}
