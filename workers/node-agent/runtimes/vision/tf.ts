import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as tf from '@tensorflow/tfjs-core';
import { setWasmPaths } from '@tensorflow/tfjs-backend-wasm';
import { modulePath } from '../paths';

export { tf };

interface ModelJson {
  modelTopology?: unknown;
  format?: string;
  generatedBy?: string;
  convertedBy?: string | null;
  signature?: unknown;
  userDefinedMetadata?: tf.io.ModelArtifacts['userDefinedMetadata'];
  modelInitializer?: unknown;
  weightsManifest: Array<{ paths: string[]; weights: tf.io.WeightsManifestEntry[] }>;
}

/** Reads a tfjs graph/layers model (model.json + .bin shards) from disk. */
export function fileHandler(jsonPath: string): tf.io.IOHandler {
  return {
    load: async () => {
      const json = JSON.parse(readFileSync(jsonPath, 'utf8')) as ModelJson;
      const dir = dirname(jsonPath);
      const shards = json.weightsManifest.flatMap((g) => g.paths.map((p) => readFileSync(join(dir, p))));
      const all = Buffer.concat(shards);
      return {
        modelTopology: json.modelTopology as tf.io.ModelArtifacts['modelTopology'],
        format: json.format,
        generatedBy: json.generatedBy,
        convertedBy: json.convertedBy,
        signature: json.signature as tf.io.ModelArtifacts['signature'],
        userDefinedMetadata: json.userDefinedMetadata,
        modelInitializer: json.modelInitializer as tf.io.ModelArtifacts['modelInitializer'],
        weightSpecs: json.weightsManifest.flatMap((g) => g.weights),
        weightData: all.buffer.slice(all.byteOffset, all.byteOffset + all.byteLength),
      };
    },
  };
}

/** The start in progress or done. A failed one is dropped, so the next call tries again. */
let ready: Promise<void> | null = null;
let routerRegistered = false;
let wasmPathsSet = false;

/**
 * tfjs-core on the wasm backend, once per thread. Plain tfjs has no file:// loader, so a load
 * router serves file:// URLs from disk (human asks for file://.../models/x.json).
 */
export function initTf(): Promise<void> {
  ready ??= (async () => {
    if (!routerRegistered) {
      // Routers answer null for URLs they do not handle (tfjs's typing says IOHandler only).
      const router = (url: string | string[]) =>
        typeof url === 'string' && url.startsWith('file://') ? fileHandler(fileURLToPath(url)) : null;
      tf.io.registerLoadRouter(router as Parameters<typeof tf.io.registerLoadRouter>[0]);
      routerRegistered = true; // once: a second router would make every file:// load ambiguous
    }
    if (!wasmPathsSet) {
      setWasmPaths(wasmDir()); // refused once the backend has been tried: set before the first try only
      wasmPathsSet = true;
    }
    // A backend that fails to start is reported as false (and logged by tfjs), not thrown.
    if (!(await tf.setBackend('wasm'))) throw new Error('the tfjs wasm backend failed to start');
    await tf.ready();
  })().catch((err: unknown) => {
    ready = null;
    throw err;
  });
  return ready;
}

/** Trailing slash matters: tfjs appends the wasm file names. */
export const wasmDir = () => `${modulePath('@tensorflow/tfjs-backend-wasm', 'dist')}/`;
