import { AppError } from './errors';
import { decodeCursor, encodeCursor } from './pagination';

const ID = '6f1c2a4e-1b2c-4d3e-8f90-0123456789ab';
const cursor = (raw: string) => Buffer.from(raw).toString('base64url');

describe('cursors', () => {
  it('round-trips a keyset', () => {
    const k = { createdAt: new Date('2026-12-01T10:00:00.123Z'), id: ID };
    expect(decodeCursor(encodeCursor(k))).toEqual(k);
  });

  it.each([
    ['no id', cursor('2026-12-01T10:00:00.000Z')],
    ['an id that is not a uuid', cursor('2026-12-01T10:00:00.000Z|not-a-uuid')],
    ['a bad time', cursor(`yesterday|${ID}`)],
    ['garbage', 'x'],
  ])('refuses %s as BAD_USER_INPUT on `after`', (_what, c) => {
    let err: unknown;
    try {
      decodeCursor(c);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(AppError);
    expect(err).toMatchObject({ code: 'BAD_USER_INPUT' });
  });
});
