import { lookup as dnsLookup } from 'node:dns/promises';
import { request } from 'node:https';
import type { IncomingMessage } from 'node:http';
import { isIP } from 'node:net';
import { bareHost, classifyAddress, pinnedLookup } from './ip-policy';

export interface ResolvedAddress {
  address: string;
  family: number;
}

export interface SafeFetchOptions {
  maxBytes: number;
  timeoutMs: number;
  /** Lets tests reach servers on loopback; never set in production. */
  allowPrivateNetworks?: boolean;
  /** DNS resolution (all addresses); tests inject fakes. Defaults to dns.lookup({ all: true }). */
  resolve?: (host: string) => Promise<ResolvedAddress[]>;
  /** Extra trusted CA certificates (tests with a self-signed server). */
  ca?: string | Buffer;
  maxRedirects?: number;
  /** Content types accepted (prefix match); the bytes are checked again by the caller. */
  acceptTypes?: readonly string[];
}

/** A refusal whose message is safe to show to the client. */
export class FetchRefused extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'FetchRefused';
  }
}

const DEFAULT_ACCEPT = ['image/', 'application/octet-stream', 'binary/octet-stream'];

const defaultResolve = async (host: string): Promise<ResolvedAddress[]> =>
  dnsLookup(host, { all: true, verbatim: true });

/** Resolves the host and refuses it unless every address is public. */
async function vetHost(host: string, opts: SafeFetchOptions): Promise<ResolvedAddress[]> {
  const bare = bareHost(host);
  const literal = isIP(bare);
  let addresses: ResolvedAddress[];
  if (literal) addresses = [{ address: bare, family: literal }];
  else {
    try {
      addresses = await (opts.resolve ?? defaultResolve)(bare);
    } catch {
      throw new FetchRefused(`host ${bare} could not be resolved`);
    }
  }
  if (addresses.length === 0) throw new FetchRefused(`host ${bare} could not be resolved`);
  if (!opts.allowPrivateNetworks) {
    // Any non-public address refuses the host: a mixed answer is a classic rebinding trick.
    for (const a of addresses) {
      const cls = classifyAddress(a.address);
      if (cls !== 'public') throw new FetchRefused(`host ${bare} resolves to a ${cls} address, which is not allowed`);
    }
  }
  return addresses;
}

interface FetchedBody {
  body: Buffer;
  contentType: string;
}

function getOnce(url: URL, addresses: ResolvedAddress[], opts: SafeFetchOptions, signal: AbortSignal): Promise<IncomingMessage> {
  return new Promise((resolve, reject) => {
    const req = request(url, {
      method: 'GET',
      lookup: pinnedLookup(addresses),
      signal,
      headers: { accept: 'image/jpeg, image/png, image/webp, */*;q=0.1', 'user-agent': 'nimbus-fetch/1' },
      ...(opts.ca ? { ca: opts.ca } : {}),
    });
    req.on('response', resolve);
    req.on('error', reject);
    req.end();
  });
}

function readCapped(res: IncomingMessage, maxBytes: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    res.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size > maxBytes) {
        res.destroy();
        reject(new FetchRefused(`response is larger than ${maxBytes} bytes`));
        return;
      }
      chunks.push(chunk);
    });
    let ended = false;
    res.on('end', () => {
      ended = true;
      resolve(Buffer.concat(chunks));
    });
    res.on('error', reject);
    // An aborted download (timeout) may close without 'end' or 'error'.
    res.on('close', () => {
      if (!ended) reject(new FetchRefused('connection closed before the body was complete'));
    });
  });
}

/**
 * GETs an https URL with SSRF protection: https only, every hop (redirects included) resolved
 * and vetted, the socket pinned to the vetted addresses (no DNS rebinding), size and time caps.
 */
export async function safeFetch(rawUrl: string, opts: SafeFetchOptions): Promise<FetchedBody> {
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), opts.timeoutMs);
  try {
    let url = parseHttpsUrl(rawUrl);
    for (let hop = 0; ; hop++) {
      const addresses = await withDeadline(vetHost(url.hostname, opts), controller.signal, opts.timeoutMs);
      let res: IncomingMessage;
      try {
        res = await getOnce(url, addresses, opts, controller.signal);
      } catch (err) {
        if (controller.signal.aborted) throw new FetchRefused(`no response within ${opts.timeoutMs} ms`);
        throw new FetchRefused(`request failed: ${(err as Error).message}`);
      }
      const status = res.statusCode ?? 0;
      if (status >= 300 && status < 400 && res.headers.location) {
        res.resume();
        if (hop >= (opts.maxRedirects ?? 3)) throw new FetchRefused('too many redirects');
        let next: URL;
        try {
          next = new URL(res.headers.location, url);
        } catch {
          throw new FetchRefused('the image URL redirects to an invalid URL');
        }
        url = parseHttpsUrl(next.toString());
        continue;
      }
      if (status !== 200) {
        res.resume();
        throw new FetchRefused(`server answered HTTP ${status}`);
      }
      const contentType = String(res.headers['content-type'] ?? '').toLowerCase();
      const accepted = opts.acceptTypes ?? DEFAULT_ACCEPT;
      if (contentType && !accepted.some((t) => contentType.startsWith(t))) {
        res.resume();
        throw new FetchRefused(`content type ${contentType} is not an image`);
      }
      const declared = Number(res.headers['content-length'] ?? NaN);
      if (Number.isFinite(declared) && declared > opts.maxBytes) {
        res.destroy();
        throw new FetchRefused(`response is larger than ${opts.maxBytes} bytes`);
      }
      try {
        return { body: await readCapped(res, opts.maxBytes), contentType };
      } catch (err) {
        if (err instanceof FetchRefused) throw err;
        if (controller.signal.aborted) throw new FetchRefused(`no response within ${opts.timeoutMs} ms`);
        throw new FetchRefused(`download failed: ${(err as Error).message}`);
      }
    }
  } finally {
    clearTimeout(timer);
  }
}

/** DNS lookups cannot be aborted: stop waiting for them when the deadline passes. */
function withDeadline<T>(p: Promise<T>, signal: AbortSignal, timeoutMs: number): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(new FetchRefused(`no response within ${timeoutMs} ms`));
    if (signal.aborted) return onAbort();
    signal.addEventListener('abort', onAbort, { once: true });
    p.then(resolve, reject).finally(() => signal.removeEventListener('abort', onAbort));
  });
}

export function parseHttpsUrl(raw: string): URL {
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new FetchRefused('not a valid URL');
  }
  if (url.protocol !== 'https:') throw new FetchRefused(`only https URLs are allowed, got ${url.protocol.replace(/:$/, '')}`);
  if (url.username || url.password) throw new FetchRefused('URLs with credentials are not allowed');
  return url;
}
