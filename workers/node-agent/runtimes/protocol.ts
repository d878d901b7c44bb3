/** Messages between the runtime host (main thread) and its worker threads. */
import type { RuntimeErrorCode } from './types';

export type ToThread =
  | { type: 'run'; id: number; serviceId: string; input: unknown }
  | { type: 'warm'; id: number; serviceIds: string[] }
  | { type: 'cancel'; id: number };

export type FromThread =
  | { type: 'ready' }
  | { type: 'progress'; id: number; fraction: number }
  | { type: 'log'; id: number; line: string }
  | { type: 'result'; id: number; output: unknown; loadMs: number; runMs: number }
  | { type: 'warmed'; id: number; loaded: string[]; failed: Array<{ serviceId: string; message: string }> }
  | { type: 'error'; id: number; code: RuntimeErrorCode; message: string };
