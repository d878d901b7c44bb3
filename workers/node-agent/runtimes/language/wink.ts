import type { WinkMethods } from 'wink-nlp';

/** A wink-nlp document flattened into plain arrays with character offsets into the original text. */
export interface WinkDoc {
  text: string;
  values: string[];
  normals: string[];
  lemmas: string[];
  types: string[];
  pos: string[];
  stop: boolean[];
  /** [start, end) character offsets per token; -1 when a token could not be located. */
  starts: number[];
  ends: number[];
  /** Token index spans [first, last] per sentence, and per-sentence sentiment. */
  sentenceSpans: Array<[number, number]>;
  sentenceSentiments: number[];
  sentiment: number;
  entities: Array<{ span: [number, number]; type: string }>;
}

let nlp: WinkMethods | null = null;

/** Loads the model once per thread (~100-250 ms). */
export function winkLoaded(): boolean {
  return nlp !== null;
}

export function loadWink(): WinkMethods {
  if (!nlp) {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const winkNLP = require('wink-nlp') as typeof import('wink-nlp').default;
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const model = require('wink-eng-lite-web-model') as Parameters<typeof winkNLP>[0];
    nlp = winkNLP(model);
  }
  return nlp;
}

/** Finds each token in the text in order; wink keeps token values verbatim, so indexOf suffices. */
function locate(text: string, values: string[]): { starts: number[]; ends: number[] } {
  const starts: number[] = [];
  const ends: number[] = [];
  let cursor = 0;
  for (const v of values) {
    const at = v.length ? text.indexOf(v, cursor) : -1;
    // A token far ahead means wink rewrote it; do not let one miss derail the rest.
    if (at < 0 || at - cursor > 64 + v.length) {
      starts.push(-1);
      ends.push(-1);
      continue;
    }
    starts.push(at);
    ends.push(at + v.length);
    cursor = at + v.length;
  }
  return { starts, ends };
}

/**
 * wink's tokenizer is quadratic in the length of a run without whitespace ('-' × 50,000: 13 s;
 * 'a1' × 50,000: ~45 s), well inside the text limit: every 256th character of such a run is read
 * as a space, so no token is longer (a URL or a blob that long is not language anyway). The text
 * keeps its length, and offsets are found in the original text (`locate`).
 */
function boundRuns(text: string): string {
  return text.replace(/\S{257,}/g, (run) => run.replace(/(\S{255})\S/g, '$1 '));
}

export function readDoc(text: string, opts: { entities?: boolean } = {}): WinkDoc {
  const w = loadWink();
  const its = w.its;
  const doc = w.readDoc(boundRuns(text));
  const tokens = doc.tokens();
  const values = tokens.out(its.value) as string[];
  const { starts, ends } = locate(text, values);
  const sentences = doc.sentences();
  const out: WinkDoc = {
    text,
    values,
    normals: tokens.out(its.normal) as string[],
    lemmas: tokens.out(its.lemma as unknown as typeof its.normal) as string[],
    types: tokens.out(its.type) as string[],
    pos: tokens.out(its.pos) as string[],
    stop: tokens.out(its.stopWordFlag) as unknown as boolean[],
    starts,
    ends,
    sentenceSpans: sentences.out(its.span) as unknown as Array<[number, number]>,
    sentenceSentiments: sentences.out(its.sentiment) as unknown as number[],
    sentiment: doc.out(its.sentiment) as unknown as number,
    entities: [],
  };
  if (opts.entities) {
    const ents = doc.entities();
    const spans = ents.out(its.span) as unknown as Array<[number, number]>;
    const types = ents.out(its.type) as string[];
    out.entities = spans.map((span, i) => ({ span, type: types[i] ?? '' }));
  }
  return out;
}

/** Character range of tokens [first, last], or null when either end was not located. */
export function tokenRange(doc: WinkDoc, first: number, last: number): [number, number] | null {
  const start = doc.starts[first] ?? -1;
  const end = doc.ends[last] ?? -1;
  return start >= 0 && end > start ? [start, end] : null;
}
