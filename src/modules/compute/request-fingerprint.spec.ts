import { createHash } from 'node:crypto';
import { AppError, ErrorCode } from '../../platform/errors';
import {
  canonicalJson, idempotencyConflict, predictionFingerprint, requestFingerprint, trainingFingerprint, type PredictRequest,
} from './request-fingerprint';

const base: PredictRequest = {
  service: 'system.echo', input: { message: { hello: 'world', n: [1, 2, { b: 1, a: 2 }] }, sleepMs: 10 },
  webhookUrl: 'https://example.com/hook', webhookEvents: ['STARTED', 'PROGRESS'], deadlineSeconds: 60, wait: 10, idempotencyKey: 'k1',
};
const fp = (over: Partial<PredictRequest> = {}) => predictionFingerprint({ ...base, ...over });

describe('canonicalJson', () => {
  it('sorts object keys recursively and keeps array order', () => {
    expect(canonicalJson({ b: 1, a: { d: [3, { z: 1, y: 2 }], c: null } })).toBe('{"a":{"c":null,"d":[3,{"y":2,"z":1}]},"b":1}');
    expect(canonicalJson([2, 1])).not.toBe(canonicalJson([1, 2]));
  });

  it('writes what JSON.stringify writes for everything else', () => {
    const v = { s: 'é"\n', n: 1.5, t: true, u: undefined, arr: [undefined, NaN, -0], d: new Date(0) };
    expect(JSON.parse(canonicalJson(v))).toEqual(JSON.parse(JSON.stringify(v)));
    expect(canonicalJson(undefined)).toBe('null');
  });
});

describe('requestFingerprint', () => {
  it('is the SHA-256 hex of the canonical JSON', () => {
    expect(requestFingerprint({ b: 1, a: 2 })).toBe(createHash('sha256').update('{"a":2,"b":1}').digest('hex'));
    expect(requestFingerprint({ a: 1 })).toMatch(/^[0-9a-f]{64}$/);
  });
});

describe('predictionFingerprint', () => {
  it('does not depend on the order of keys in the client\'s JSON', () => {
    const reordered: PredictRequest = {
      idempotencyKey: 'k1', wait: 10, deadlineSeconds: 60, webhookEvents: ['PROGRESS', 'STARTED'], webhookUrl: 'https://example.com/hook',
      input: { sleepMs: 10, message: { n: [1, 2, { a: 2, b: 1 }], hello: 'world' } }, service: 'system.echo',
    };
    expect(predictionFingerprint(reordered)).toBe(fp());
  });

  it('ignores wait and the key itself', () => {
    expect(fp({ wait: 0 })).toBe(fp());
    expect(fp({ wait: undefined })).toBe(fp());
    expect(fp({ idempotencyKey: 'another' })).toBe(fp());
  });

  it('differs for a different input', () => {
    expect(fp({ input: { ...(base.input as object), sleepMs: 11 } })).not.toBe(fp());
    expect(fp({ input: { message: { hello: 'world', n: [2, 1, { b: 1, a: 2 }] }, sleepMs: 10 } })).not.toBe(fp()); // array order counts
    expect(fp({ input: { message: 'x' } })).not.toBe(fp({ input: { message: 'y' } }));
    expect(fp({ input: { n: 1 } })).not.toBe(fp({ input: { n: '1' } }));
  });

  it('differs for a different target', () => {
    expect(fp({ service: 'language.detect-language' })).not.toBe(fp());
    expect(fp({ service: undefined, deployment: 'system.echo' })).not.toBe(fp());
  });

  it('differs for a different webhook URL, webhook events or deadline', () => {
    expect(fp({ webhookUrl: 'https://example.com/other' })).not.toBe(fp());
    expect(fp({ webhookUrl: undefined })).not.toBe(fp());
    expect(fp({ webhookEvents: ['STARTED'] })).not.toBe(fp());
    expect(fp({ deadlineSeconds: 61 })).not.toBe(fp());
    expect(fp({ deadlineSeconds: undefined })).not.toBe(fp());
  });

  it('takes absent and null optional fields, and no webhook events and an empty list, alike', () => {
    expect(fp({ webhookUrl: null, deadlineSeconds: null, webhookEvents: null })).toBe(fp({ webhookUrl: undefined, deadlineSeconds: undefined, webhookEvents: [] }));
    expect(fp({ webhookEvents: ['STARTED', 'STARTED', 'PROGRESS'] })).toBe(fp());
  });
});

describe('trainingFingerprint', () => {
  const t = { datasetId: 'd1', modelName: 'm', task: 'TABULAR_CLASSIFICATION', targetColumn: 'y', hardware: 'CPU', idempotencyKey: 'k', webhookEvents: ['PROGRESS'] };

  it('ignores the key and key order, and differs for a different request', () => {
    const { idempotencyKey: _k, ...rest } = t;
    expect(trainingFingerprint({ ...Object.fromEntries(Object.entries(rest).reverse()), idempotencyKey: 'other' })).toBe(trainingFingerprint(t));
    expect(trainingFingerprint({ ...t, targetColumn: 'z' })).not.toBe(trainingFingerprint(t));
    expect(trainingFingerprint({ ...t, webhookEvents: undefined })).not.toBe(trainingFingerprint(t));
  });

  it('is never a prediction\'s fingerprint', () => {
    expect(trainingFingerprint({})).not.toBe(predictionFingerprint({ input: {} }));
  });
});

describe('idempotencyConflict', () => {
  const h1 = requestFingerprint(1);
  const h2 = requestFingerprint(2);

  it('refuses another target, or another fingerprint, with CONFLICT on input.idempotencyKey', () => {
    for (const err of [idempotencyConflict(false, h1, h1), idempotencyConflict(true, h1, h2), idempotencyConflict(false, null, null)]) {
      expect(err).toBeInstanceOf(AppError);
      expect(err).toMatchObject({ code: ErrorCode.CONFLICT, message: expect.stringContaining('used for a different request'), extensions: { field: 'input.idempotencyKey' } });
    }
  });

  it('accepts the same target and fingerprint, and a missing fingerprint on either side', () => {
    expect(idempotencyConflict(true, h1, h1)).toBeNull();
    expect(idempotencyConflict(true, null, h1)).toBeNull(); // a job from before fingerprints
    expect(idempotencyConflict(true, h1, undefined)).toBeNull(); // an internal caller (training trials)
  });
});
