import { isIP, type LookupFunction } from 'node:net';

/**
 * Classification of IP addresses for SSRF protection: only `public` addresses may be fetched.
 * Hand-written instead of net.BlockList so that IPv4 embedded in IPv6 (mapped, compatible,
 * NAT64, 6to4) is classified by its IPv4 part and the rules are easy to unit-test.
 */
export type AddressClass =
  | 'public'
  | 'private'
  | 'loopback'
  | 'link-local'
  | 'unique-local'
  | 'cgnat'
  | 'multicast'
  | 'unspecified'
  | 'reserved'
  | 'invalid';

type V4Rule = [base: number, prefix: number, cls: AddressClass];

const v4 = (a: number, b: number, c: number, d: number) => ((a << 24) | (b << 16) | (c << 8) | d) >>> 0;

const V4_RULES: V4Rule[] = [
  [v4(0, 0, 0, 0), 8, 'unspecified'], // "this network"
  [v4(10, 0, 0, 0), 8, 'private'],
  [v4(100, 64, 0, 0), 10, 'cgnat'],
  [v4(127, 0, 0, 0), 8, 'loopback'],
  [v4(169, 254, 0, 0), 16, 'link-local'], // includes cloud metadata 169.254.169.254
  [v4(172, 16, 0, 0), 12, 'private'],
  [v4(192, 0, 0, 0), 24, 'reserved'], // IETF protocol assignments
  [v4(192, 0, 2, 0), 24, 'reserved'], // TEST-NET-1
  [v4(192, 88, 99, 0), 24, 'reserved'], // 6to4 relay anycast
  [v4(192, 168, 0, 0), 16, 'private'],
  [v4(198, 18, 0, 0), 15, 'reserved'], // benchmarking
  [v4(198, 51, 100, 0), 24, 'reserved'], // TEST-NET-2
  [v4(203, 0, 113, 0), 24, 'reserved'], // TEST-NET-3
  [v4(224, 0, 0, 0), 4, 'multicast'],
  [v4(240, 0, 0, 0), 4, 'reserved'], // includes 255.255.255.255
];

function parseV4(ip: string): number | null {
  const parts = ip.split('.');
  if (parts.length !== 4) return null;
  let n = 0;
  for (const p of parts) {
    if (!/^\d{1,3}$/.test(p) || Number(p) > 255) return null;
    n = n * 256 + Number(p);
  }
  return n >>> 0;
}

function classifyV4(n: number): AddressClass {
  for (const [base, prefix, cls] of V4_RULES) {
    const mask = prefix === 0 ? 0 : (0xffffffff << (32 - prefix)) >>> 0;
    if ((n & mask) >>> 0 === base) return cls;
  }
  return 'public';
}

/** Expands an IPv6 address (with optional dotted IPv4 tail) into 8 16-bit groups. */
function parseV6(ip: string): number[] | null {
  let s = ip;
  const lastColon = s.lastIndexOf(':');
  const dotted = s.slice(lastColon + 1);
  if (dotted.includes('.')) {
    const n = parseV4(dotted);
    if (n === null) return null;
    s = `${s.slice(0, lastColon + 1)}${(n >>> 16).toString(16)}:${(n & 0xffff).toString(16)}`;
  }
  const halves = s.split('::');
  if (halves.length > 2) return null;
  const toGroups = (h: string) => (h === '' ? [] : h.split(':'));
  const head = toGroups(halves[0] ?? '');
  const tail = halves.length === 2 ? toGroups(halves[1] ?? '') : [];
  const count = head.length + tail.length;
  if (halves.length === 1 ? count !== 8 : count > 7) return null;
  const hex = [...head, ...new Array<string>(8 - count).fill('0'), ...tail];
  if (!hex.every((g) => /^[0-9a-f]{1,4}$/i.test(g))) return null;
  return hex.map((g) => parseInt(g, 16));
}

function classifyV6(g: number[]): AddressClass {
  const [g0 = 0, g1 = 0, g2 = 0, g3 = 0, g4 = 0, g5 = 0, g6 = 0, g7 = 0] = g;
  const embedded = () => classifyV4(((g6 << 16) | g7) >>> 0);
  const firstSixZero = g0 === 0 && g1 === 0 && g2 === 0 && g3 === 0 && g4 === 0;
  if (firstSixZero && g5 === 0 && g6 === 0 && g7 === 0) return 'unspecified';
  if (firstSixZero && g5 === 0 && g6 === 0 && g7 === 1) return 'loopback';
  if (firstSixZero && g5 === 0xffff) return embedded(); // IPv4-mapped ::ffff:a.b.c.d
  if (firstSixZero && g5 === 0) return embedded(); // deprecated IPv4-compatible ::a.b.c.d
  if (g0 === 0 && g1 === 0 && g2 === 0 && g3 === 0 && g4 === 0xffff && g5 === 0) return embedded(); // ::ffff:0:a.b.c.d (SIIT)
  if (g0 === 0x64 && g1 === 0xff9b && g2 === 0 && g3 === 0 && g4 === 0 && g5 === 0) return embedded(); // NAT64
  if (g0 === 0x64 && g1 === 0xff9b && g2 === 1) return 'private'; // local-use NAT64
  if (g0 === 0x2002) return classifyV4(((g1 << 16) | g2) >>> 0); // 6to4 embeds an IPv4
  if ((g0 & 0xfe00) === 0xfc00) return 'unique-local';
  if ((g0 & 0xffc0) === 0xfe80) return 'link-local';
  if ((g0 & 0xffc0) === 0xfec0) return 'private'; // deprecated site-local
  if ((g0 & 0xff00) === 0xff00) return 'multicast';
  if (g0 === 0x2001 && g1 === 0xdb8) return 'reserved'; // documentation
  if (g0 === 0x2001 && g1 < 0x200) return 'reserved'; // IETF protocol assignments incl. Teredo
  if ((g0 & 0xe000) !== 0x2000) return 'reserved'; // outside global unicast 2000::/3
  return 'public';
}

/** Classifies an IPv4 or IPv6 literal (brackets and zone ids accepted). */
export function classifyAddress(address: string): AddressClass {
  const ip = address.trim().replace(/^\[|\]$/g, '').replace(/%.*$/, '');
  const kind = isIP(ip);
  if (kind === 4) {
    const n = parseV4(ip);
    return n === null ? 'invalid' : classifyV4(n);
  }
  if (kind === 6) {
    const groups = parseV6(ip);
    return groups === null ? 'invalid' : classifyV6(groups);
  }
  return 'invalid';
}

export const isPublicAddress = (address: string): boolean => classifyAddress(address) === 'public';

/**
 * A net `lookup` that only ever answers the vetted addresses, so the socket cannot be re-resolved
 * (no DNS rebinding between the check and the connect). Node asks with `all: true` when it races
 * address families (`autoSelectFamily`, on by default since Node 20) and then needs the list.
 */
export function pinnedLookup(addresses: Array<{ address: string; family: number }>): LookupFunction {
  return ((_host: string, options: { all?: boolean } | undefined, callback: (...args: unknown[]) => void) => {
    const first = addresses[0]!;
    if (options?.all) callback(null, addresses);
    else callback(null, first.address, first.family);
  }) as unknown as LookupFunction;
}

/** A URL's hostname as an address or name to resolve: an IPv6 literal comes bracketed (`[::1]`). */
export const bareHost = (hostname: string): string => hostname.replace(/^\[|\]$/g, '');
