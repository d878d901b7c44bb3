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

let ready: Promise<void> | null = null;

/**
 * tfjs-core on the wasm backend, once per thread. Plain tfjs has no file:// loader, so a load
 * router serves file:// URLs from disk (human asks for file://.../models/x.json).
 */
export function initTf(): Promise<void> {
  ready ??= (async () => {
    // Routers answer null for URLs they do not handle (tfjs's typing says IOHandler only).
    const router = (url: string | string[]) =>
      typeof url === 'string' && url.startsWith('file://') ? fileHandler(fileURLToPath(url)) : null;
    tf.io.registerLoadRouter(router as Parameters<typeof tf.io.registerLoadRouter>[0]);
    setWasmPaths(wasmDir());
    await tf.setBackend('wasm');
    await tf.ready();
  })();
  return ready;
}

/** Trailing slash matters: tfjs appends the wasm file names. */
export const wasmDir = () => `${modulePath('@tensorflow/tfjs-backend-wasm', 'dist')}/`;
