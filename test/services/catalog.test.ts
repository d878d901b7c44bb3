import { readFileSync } from 'node:fs';
import { createServer, type Server } from 'node:https';
import type { AddressInfo } from 'node:net';
import { crc32, deflateSync } from 'node:zlib';
import sharp from 'sharp';
import { AppError } from '../../src/platform/errors';
import { classifyAddress, getService, prepareInput, SERVICES, type PreparedImage } from '../../src/modules/services/catalog';
import { ImageInputStore } from '../../src/modules/services/image-store';
import { ServicesService } from '../../src/modules/services/services.service';
import type { ArtifactStore } from '../../src/modules/training/artifact-store';
import type { Principal } from '../../src/modules/tenancy/principal';
import { selfSigned } from '../support/net';

/** Runs prepareInput and returns the BAD_USER_INPUT field it names (fails the test otherwise). */
async function badField(serviceId: string, raw: unknown, opts?: Parameters<typeof prepareInput>[2]): Promise<{ field: string; message: string }> {
  try {
    await prepareInput(serviceId, raw, opts);
  } catch (err) {
    expect(err).toBeInstanceOf(AppError);
    const e = err as AppError;
    expect(e.code).toBe('BAD_USER_INPUT');
    return { field: String(e.extensions.field), message: e.message };
  }
  throw new Error(`expected ${serviceId} to reject ${JSON.stringify(raw).slice(0, 200)}`);
}

/** Expects an image refusal on input.image and returns its message. */
async function refused(image: string, opts?: Parameters<typeof prepareInput>[2]): Promise<string> {
  const { field, message } = await badField('vision.detect-objects', { image }, opts);
  expect(field).toBe('input.image');
  return message;
}

const png = (w: number, h: number) => sharp({ create: { width: w, height: h, channels: 3, background: { r: 200, g: 50, b: 50 } } }).png().toBuffer();

/** A PNG whose header claims w x h (metadata reads only the header). */
function pngHeader(w: number, h: number): Buffer {
  const chunk = (type: string, data: Buffer) => {
    const len = Buffer.alloc(4);
    len.writeUInt32BE(data.length);
    const body = Buffer.concat([Buffer.from(type, 'ascii'), data]);
    const crc = Buffer.alloc(4);
    crc.writeUInt32BE(crc32(body) >>> 0);
    return Buffer.concat([len, body, crc]);
  };
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(w, 0);
  ihdr.writeUInt32BE(h, 4);
  ihdr.set([8, 2, 0, 0, 0], 8);
  return Buffer.concat([Buffer.from([137, 80, 78, 71, 13, 10, 26, 10]), chunk('IHDR', ihdr), chunk('IDAT', deflateSync(Buffer.alloc(16))), chunk('IEND', Buffer.alloc(0))]);
}

describe('service catalog', () => {
  it('lists the ten services of services.md with models, CPU hardware and examples that validate', async () => {
    expect(SERVICES.map((s) => s.id).sort()).toEqual([
      'forecast.auto', 'language.detect-language', 'language.entities', 'language.keywords', 'language.sentiment',
      'system.echo', 'vision.detect-objects', 'vision.faces', 'vision.moderate', 'vision.ocr',
    ]);
    for (const s of SERVICES) {
      expect(getService(s.id)).toBe(s);
      expect(s.hardware).toBe('CPU');
      expect(s.priceMultiplier).toBeGreaterThan(0);
      expect(s.modelVersion).not.toMatch(/unknown/);
      const example = s.inputExample as { image?: string };
      if (typeof example.image === 'string' && /^(https:|upload:)/.test(example.image)) continue; // needs network/uploads
      await expect(prepareInput(s.id, s.inputExample)).resolves.toBeDefined();
    }
    expect(getService('vision.nope')).toBeUndefined();
    expect(getService('vision.ocr')?.modelVersion).toBe(JSON.parse(readFileSync('node_modules/tesseract.js/package.json', 'utf8')).version);
  });

  it('applies defaults', async () => {
    await expect(prepareInput('language.keywords', { text: 'hello world' })).resolves.toEqual({ text: 'hello world', maxResults: 10 });
    await expect(prepareInput('system.echo', undefined)).resolves.toEqual({ sleepMs: 0, fail: false });
    const img = (await png(4, 3)).toString('base64');
    await expect(prepareInput('vision.detect-objects', { image: img })).resolves.toMatchObject({ minScore: 0.3, maxResults: 20 });
  });

  it('names the offending field for bad input', async () => {
    const series = Array.from({ length: 24 }, (_, i) => i + 1);
    const cases: Array<[string, unknown, string]> = [
      ['language.sentiment', { text: 'ok', foo: 1 }, 'input.foo'],
      ['language.sentiment', {}, 'input.text'],
      ['language.sentiment', { text: '' }, 'input.text'],
      ['language.sentiment', { text: '   \n\t ' }, 'input.text'],
      ['language.sentiment', { text: 'x'.repeat(100_001) }, 'input.text'],
      ['language.entities', { text: 42 }, 'input.text'],
      ['language.sentiment', 'just a string', 'input'],
      ['language.keywords', { text: 'hello', maxResults: 0 }, 'input.maxResults'],
      ['forecast.auto', { series: [1, 2, 3, 'x', ...series], horizon: 3 }, 'input.series[3]'],
      ['forecast.auto', { series: [1, 2, 3, null, ...series], horizon: 3 }, 'input.series[3]'],
      ['forecast.auto', { series: [1, 2, 3, 4, 5], horizon: 3 }, 'input.series'],
      ['forecast.auto', { series: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11], horizon: 3 }, 'input.series'],
      ['forecast.auto', { series, horizon: 0 }, 'input.horizon'],
      ['forecast.auto', { series, horizon: 366 }, 'input.horizon'],
      ['forecast.auto', { series, horizon: 1.5 }, 'input.horizon'],
      ['forecast.auto', { series }, 'input.horizon'],
      ['forecast.auto', { series, horizon: 3, seasonality: 1 }, 'input.seasonality'],
      ['forecast.auto', { series, horizon: 3, timestamps: ['2024-01-01'] }, 'input.timestamps'],
      ['forecast.auto', { series, horizon: 3, extra: true }, 'input.extra'],
      ['system.echo', { sleepMs: 600_001 }, 'input.sleepMs'],
      ['system.echo', { sleepMs: -1 }, 'input.sleepMs'],
      ['system.echo', { progressSteps: 0 }, 'input.progressSteps'],
      ['system.echo', { fail: 'yes' }, 'input.fail'],
      ['vision.faces', {}, 'input.image'],
      ['vision.faces', { image: 'x', embeddings: 'yes' }, 'input.embeddings'],
      ['vision.detect-objects', { image: 'x', minScore: 2 }, 'input.minScore'],
      ['vision.ocr', { image: 'x', language: 'deu' }, 'input.language'],
      ['vision.moderate', { image: 'x', threshold: 0.5 }, 'input.threshold'],
    ];
    for (const [service, raw, field] of cases) {
      expect({ service, raw: JSON.stringify(raw).slice(0, 80), field: (await badField(service, raw)).field }).toEqual({
        service, raw: JSON.stringify(raw).slice(0, 80), field,
      });
    }
    expect((await badField('vision.ocr', { image: 'upload:abc' })).message).toMatch(/uploads are not available/);
  });

  it('accepts 2 seasons when shorter than 12 points', async () => {
    await expect(prepareInput('forecast.auto', { series: [1, 5, 2, 6, 1, 5, 2, 6], horizon: 2, seasonality: 4 })).resolves.toMatchObject({ horizon: 2 });
  });

  it('normalises images and rejects bad ones with a clear reason', async () => {
    const bytes = await png(40, 30);
    const wrapped = bytes.toString('base64').replace(/.{1,76}/g, '$&\r\n'); // MIME-style line breaks
    for (const raw of [bytes.toString('base64'), `data:image/png;base64,${bytes.toString('base64')}`, bytes.toString('base64url'), wrapped]) {
      const out = (await prepareInput('vision.moderate', { image: raw })) as { image: PreparedImage };
      expect(out.image).toEqual({ base64: bytes.toString('base64'), mediaType: 'image/png', width: 40, height: 30 });
    }
    const jpeg = await sharp(bytes).jpeg().toBuffer();
    await expect(prepareInput('vision.faces', { image: jpeg.toString('base64') })).resolves.toMatchObject({
      embeddings: false, image: { mediaType: 'image/jpeg', width: 40, height: 30 },
    });
    const webp = await sharp(bytes).webp().toBuffer();
    await expect(prepareInput('vision.ocr', { image: webp.toString('base64') })).resolves.toMatchObject({ image: { mediaType: 'image/webp' } });

    const reasons: Array<[string, RegExp]> = [
      ['not base64 at all!', /not base64/],
      [`${bytes.toString('base64').replace(/=+$/, '')}===`, /not base64/], // three padding characters
      [`${bytes.toString('base64').slice(0, 9)}`, /not base64/], // a length no bytes encode to (4n + 1)
      [Buffer.from('hello, this is plain text and not an image').toString('base64'), /not a decodable image/],
      [(await sharp(bytes).gif().toBuffer()).toString('base64'), /unsupported media type gif/],
      [`data:text/plain;base64,${bytes.toString('base64')}`, /not an image/],
      ['A'.repeat(14_500_000), /too large/],
      [pngHeader(8000, 7000).toString('base64'), /too large \(8000x7000/],
      ['http://example.com/cat.png', /only https/],
      ['ftp://example.com/cat.png', /only https/],
    ];
    for (const [image, reason] of reasons) {
      const { field, message } = await badField('vision.detect-objects', { image });
      expect(field).toBe('input.image');
      expect(message).toMatch(reason);
    }
  });

  it('resolves upload:<id> through the injected resolver', async () => {
    const bytes = await png(8, 8);
    const resolveUpload = jest.fn(async (id: string) => {
      if (id === 'missing') throw new AppError('NOT_FOUND', 'upload not found');
      return bytes;
    });
    await expect(prepareInput('vision.moderate', { image: 'upload:u_123' }, { resolveUpload })).resolves.toMatchObject({ image: { width: 8, height: 8 } });
    expect(resolveUpload).toHaveBeenCalledWith('u_123');
    expect((await badField('vision.moderate', { image: 'upload:missing' }, { resolveUpload })).message).toMatch(/not found/);
  });
});

describe('vision inputs through ServicesService with an image store', () => {
  const tenantId = '6f1c2a9e-3b4d-4c5e-8f70-112233445566';
  const principal = { tenantId } as Principal;
  const prices = { unitPriceCents: async () => 1.2 };
  const memoryStore = () => {
    const objects = new Map<string, Buffer>();
    const store = { kind: 'local', put: jest.fn(async (key: string, body: Buffer) => (objects.set(key, body), { bytes: body.length })) };
    return { objects, store: store as unknown as ArtifactStore & { put: jest.Mock } };
  };

  it('stores the checked bytes under the caller\'s tenant and puts only a reference in the job input', async () => {
    const { objects, store } = memoryStore();
    const services = new ServicesService(prices, {}, new ImageInputStore(store));
    const bytes = await png(40, 30);
    const target = await services.resolve(principal, { service: 'vision.ocr' }, { image: `data:image/png;base64,${bytes.toString('base64')}` });
    expect(target.input).toEqual({
      language: 'eng',
      image: { ref: expect.stringMatching(new RegExp(`^inputs/${tenantId}/[0-9a-f-]{36}$`)), mediaType: 'image/png', width: 40, height: 30, bytes: bytes.length },
    });
    const ref = (target.input as { image: { ref: string } }).image.ref;
    expect(objects.get(ref)?.equals(bytes)).toBe(true);
    expect(store.put).toHaveBeenCalledWith(ref, expect.any(Buffer), { contentType: 'image/png' });
    // Text services are untouched.
    await expect(services.resolve(principal, { service: 'language.sentiment' }, { text: 'fine' })).resolves.toMatchObject({ input: { text: 'fine' } });
    expect(store.put).toHaveBeenCalledTimes(1);
  });

  it('stores nothing for input that fails a check, and refuses a reference as the image', async () => {
    const { store } = memoryStore();
    const services = new ServicesService(prices, {}, new ImageInputStore(store));
    const bytes = await png(8, 8);
    const bad: unknown[] = [
      { image: 'not base64 at all!' },
      { image: bytes.toString('base64'), extra: 1 },
      { image: { ref: `inputs/${tenantId}/00000000-0000-4000-8000-000000000001`, mediaType: 'image/png', width: 8, height: 8, bytes: 10 } },
      { image: { base64: bytes.toString('base64'), mediaType: 'image/png', width: 8, height: 8 } },
    ];
    for (const input of bad) {
      await expect(services.resolve(principal, { service: 'vision.moderate' }, input)).rejects.toMatchObject({ code: 'BAD_USER_INPUT' });
    }
    expect(store.put).not.toHaveBeenCalled();
  });

  it('answers SERVICE_UNAVAILABLE, without the store\'s own message, when the store refuses the write', async () => {
    const store = { kind: 's3', put: async () => { throw new Error('AccessDenied on bucket nimbus-prod-secret'); } } as unknown as ArtifactStore;
    const services = new ServicesService(prices, {}, new ImageInputStore(store));
    const err = await services.resolve(principal, { service: 'vision.moderate' }, { image: (await png(8, 8)).toString('base64') }).catch((e: AppError) => e);
    expect(err).toMatchObject({ code: 'SERVICE_UNAVAILABLE' });
    expect((err as AppError).message).not.toMatch(/secret|AccessDenied/);
  });
});

describe('SSRF protection', () => {
  it('classifies addresses', () => {
    const table: Record<string, string> = {
      '127.0.0.1': 'loopback', '127.255.0.9': 'loopback', '10.0.0.1': 'private', '10.255.255.255': 'private',
      '172.16.0.1': 'private', '172.31.255.254': 'private', '172.32.0.1': 'public', '192.168.1.20': 'private',
      '169.254.169.254': 'link-local', '100.64.0.1': 'cgnat', '100.127.255.255': 'cgnat', '100.128.0.1': 'public',
      '0.0.0.0': 'unspecified', '224.0.0.251': 'multicast', '255.255.255.255': 'reserved', '192.0.2.5': 'reserved',
      '8.8.8.8': 'public', '1.1.1.1': 'public',
      '::1': 'loopback', '::': 'unspecified', 'fc00::1': 'unique-local', 'fd00:ec2::254': 'unique-local',
      'fe80::1': 'link-local', 'fe80::1%eth0': 'link-local', 'ff02::1': 'multicast',
      '::ffff:127.0.0.1': 'loopback', '::ffff:7f00:1': 'loopback', '::ffff:10.0.0.1': 'private', '::ffff:169.254.169.254': 'link-local',
      '::ffff:8.8.8.8': 'public', '64:ff9b::192.168.0.1': 'private', '2002:c0a8:0101::1': 'private', '2001:db8::1': 'reserved',
      '2606:4700:4700::1111': 'public', '[2a00:1450:4001:80b::200e]': 'public',
      'localhost': 'invalid', '1.2.3': 'invalid', '::ffff:999.0.0.1': 'invalid',
    };
    const got = Object.fromEntries(Object.keys(table).map((a) => [a, classifyAddress(a)]));
    expect(got).toEqual(table);
  });

  it('refuses URLs that point at private networks, before connecting', async () => {
    expect(await refused('https://localhost/cat.png')).toMatch(/loopback address/);
    expect(await refused('https://127.0.0.1/cat.png')).toMatch(/loopback/);
    expect(await refused('https://2130706433/cat.png')).toMatch(/loopback/); // 127.0.0.1 as an integer
    expect(await refused('https://[::1]/cat.png')).toMatch(/loopback/);
    expect(await refused('https://[::ffff:127.0.0.1]:8443/cat.png')).toMatch(/loopback/);
    expect(await refused('https://169.254.169.254/latest/meta-data/')).toMatch(/link-local/);
    expect(await refused('https://10.0.0.8/cat.png')).toMatch(/private/);
    expect(await refused('http://8.8.8.8/cat.png')).toMatch(/only https/);
    expect(await refused('https://user:pw@example.com/cat.png')).toMatch(/credentials/);
    // A name whose answers mix public and private addresses is refused (rebinding trick).
    const resolveHost = jest.fn(async () => [{ address: '93.184.216.34', family: 4 }, { address: '192.168.0.10', family: 4 }]);
    expect(await refused('https://images.example.com/cat.png', { resolveHost })).toMatch(/private address/);
    expect(resolveHost).toHaveBeenCalledWith('images.example.com');
    expect(await refused('https://cgnat.example/cat.png', { resolveHost: async () => [{ address: '100.64.1.1', family: 4 }] })).toMatch(/cgnat/);
    expect(await refused('https://v6.example/cat.png', { resolveHost: async () => [{ address: 'fd00::5', family: 6 }] })).toMatch(/unique-local/);
    expect(await refused('https://nx.example/cat.png', { resolveHost: async () => Promise.reject(new Error('ENOTFOUND')) })).toMatch(/could not be resolved/);
  });

  it('gives up on DNS that never answers after the 5 s cap', async () => {
    const t0 = Date.now();
    expect(await refused('https://slow-dns.example/cat.png', { resolveHost: () => new Promise(() => undefined) })).toMatch(/within 5000 ms/);
    expect(Date.now() - t0).toBeLessThan(6500);
  }, 10_000);
});


const tls = selfSigned();
(tls ? describe : describe.skip)('https image fetch (local server, private networks allowed for the test)', () => {
  let server: Server;
  let base: string;
  let image: Buffer;
  beforeAll(async () => {
    image = await png(64, 48);
    server = createServer({ key: tls?.key, cert: tls?.cert }, (req, res) => {
      if (req.url === '/cat.png') res.writeHead(200, { 'content-type': 'image/png' }).end(image);
      else if (req.url === '/redirect') res.writeHead(302, { location: '/cat.png' }).end();
      else if (req.url === '/to-http') res.writeHead(302, { location: `http://localhost:${(server.address() as AddressInfo).port}/cat.png` }).end();
      else if (req.url === '/html') res.writeHead(200, { 'content-type': 'text/html' }).end('<html></html>');
      else if (req.url === '/huge') {
        res.writeHead(200, { 'content-type': 'image/png' }); // chunked: no content-length to trust
        const block = Buffer.alloc(1 << 20);
        for (let i = 0; i < 11; i++) res.write(block);
        res.end();
      } else if (req.url === '/slow') res.writeHead(200, { 'content-type': 'image/png' }).write(image.subarray(0, 10)); // never ends
      else res.writeHead(404).end();
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    base = `https://localhost:${(server.address() as AddressInfo).port}`;
  });
  afterAll(() => {
    server.closeAllConnections();
    server.close();
  });
  const opts = () => ({ allowPrivateNetworks: true, tlsCa: tls?.cert });

  it('downloads, follows same-scheme redirects and checks the bytes', async () => {
    await expect(prepareInput('vision.moderate', { image: `${base}/cat.png` }, opts())).resolves.toEqual({
      image: { base64: image.toString('base64'), mediaType: 'image/png', width: 64, height: 48 },
    });
    await expect(prepareInput('vision.moderate', { image: `${base}/redirect` }, opts())).resolves.toMatchObject({ image: { width: 64 } });
  });

  it('refuses the same server without the test-only allowance, plain-http redirects, wrong types, size and time overruns', async () => {
    expect(await refused(`${base}/cat.png`, { tlsCa: tls?.cert })).toMatch(/loopback/);
    expect(await refused(`${base}/to-http`, opts())).toMatch(/only https/);
    expect(await refused(`${base}/html`, opts())).toMatch(/text\/html is not an image/);
    expect(await refused(`${base}/huge`, opts())).toMatch(/larger than/);
    expect(await refused(`${base}/missing`, opts())).toMatch(/HTTP 404/);
    const t0 = Date.now();
    expect(await refused(`${base}/slow`, opts())).toMatch(/within 5000 ms|closed before/);
    expect(Date.now() - t0).toBeLessThan(7000);
    expect(await refused(`${base}/cat.png`, { allowPrivateNetworks: true })).toMatch(/request failed/); // untrusted certificate
  }, 15_000);
});
