import { readDoc, tokenRange } from './wink';

export type EntityType = 'PERSON' | 'PLACE' | 'ORGANIZATION' | 'DATE' | 'TIME' | 'MONEY' | 'PERCENT' | 'NUMBER' | 'EMAIL' | 'URL';
export interface Entity {
  text: string;
  type: EntityType;
  start: number;
  end: number;
}
export interface EntitiesOutput {
  entities: Entity[];
}

interface Term {
  text: string;
  post?: string;
  offset?: { start: number; length: number };
}
interface Match {
  terms: Term[];
}
interface View {
  json(opts: object): Match[];
}
interface CompromiseDoc {
  people(): View;
  places(): View;
  organizations(): View;
}
type Compromise = (text: string) => CompromiseDoc;

let compromise: Compromise | null = null;
export const compromiseLoaded = () => compromise !== null;
export function loadCompromise(): Compromise {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  compromise ??= require('compromise') as Compromise;
  return compromise;
}

/** wink-eng-lite-web-model entity types mapped onto the contract's; others (EMOJI, HASHTAG...) dropped. */
const WINK_TYPES: Record<string, EntityType> = {
  DATE: 'DATE', TIME: 'TIME', MONEY: 'MONEY', PERCENT: 'PERCENT', CARDINAL: 'NUMBER', ORDINAL: 'NUMBER',
  EMAIL: 'EMAIL', URL: 'URL', DURATION: 'DATE',
};
const ABBREVIATION = /^(inc|corp|co|ltd|llc|plc|bros|jr|sr|st|dr|mr|mrs|ms|prof|[A-Z])$/i;
// Type precedence when two spans are equally long: names beat numbers.
const PRIORITY: EntityType[] = ['EMAIL', 'URL', 'PERSON', 'ORGANIZATION', 'PLACE', 'MONEY', 'PERCENT', 'DATE', 'TIME', 'NUMBER'];

/** Splits a compromise match at commas/semicolons ("Paris, France" is two places). */
function compromiseSpans(text: string, matches: Match[]): Array<[number, number]> {
  const spans: Array<[number, number]> = [];
  for (const m of matches) {
    let start = -1;
    let end = -1;
    m.terms.forEach((t, i) => {
      if (!t.offset) return;
      if (start < 0) start = t.offset.start;
      end = t.offset.start + t.offset.length;
      const last = i === m.terms.length - 1;
      if (last || /[,;:()]/.test(t.post ?? '')) {
        if (text[end] === '.' && ABBREVIATION.test(t.text)) end += 1;
        if (start >= 0 && end > start) spans.push([start, end]);
        start = -1;
      }
    });
  }
  return spans;
}

/** Trailing punctuation is sentence structure, not part of a URL. */
function trimUrl(text: string, start: number, end: number): number {
  let e = end;
  while (e > start && /[.,;:!?)\]'"]/.test(text[e - 1] ?? '')) e--;
  return e;
}

export function entities(input: { text: string }): EntitiesOutput {
  const { text } = input;
  const found: Entity[] = [];
  const add = (type: EntityType, start: number, end: number) => {
    if (start >= 0 && end > start && end <= text.length) found.push({ text: text.slice(start, end), type, start, end });
  };
  const doc = loadCompromise()(text);
  const opts = { offset: true, terms: { offset: true } };
  for (const [type, view] of [['PERSON', doc.people()], ['ORGANIZATION', doc.organizations()], ['PLACE', doc.places()]] as const) {
    for (const [s, e] of compromiseSpans(text, view.json(opts))) add(type, s, e);
  }
  const wink = readDoc(text, { entities: true });
  for (const { span, type } of wink.entities) {
    const mapped = WINK_TYPES[type];
    const range = mapped ? tokenRange(wink, span[0], span[1]) : null;
    if (!mapped || !range) continue;
    add(mapped, range[0], mapped === 'URL' ? trimUrl(text, range[0], range[1]) : range[1]);
  }
  // De-duplicate: longest span first, then type precedence; drop anything overlapping a kept span.
  found.sort((a, b) => b.end - b.start - (a.end - a.start) || PRIORITY.indexOf(a.type) - PRIORITY.indexOf(b.type));
  const kept: Entity[] = [];
  for (const e of found) {
    if (!kept.some((k) => e.start < k.end && k.start < e.end)) kept.push(e);
  }
  kept.sort((a, b) => a.start - b.start);
  return { entities: toCodePointOffsets(text, kept) };
}

/**
 * The contract's offsets count characters (code points), as the text limit does; JavaScript's
 * string indices count UTF-16 code units, one more for every character outside the BMP (emoji,
 * some CJK) before the offset. Text without such characters (most) is left as it is.
 */
export function toCodePointOffsets<T extends { start: number; end: number }>(text: string, spans: T[]): T[] {
  if (!/[\uD800-\uDBFF]/.test(text)) return spans;
  // before[i]: surrogate pairs that end before UTF-16 index i.
  const before = new Uint32Array(text.length + 1);
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    before[i + 1] = before[i]! + (c >= 0xdc00 && c <= 0xdfff && i > 0 && (text.charCodeAt(i - 1) & 0xfc00) === 0xd800 ? 1 : 0);
  }
  return spans.map((s) => ({ ...s, start: s.start - before[s.start]!, end: s.end - before[s.end]! }));
}
