import { readDoc } from './wink';

export interface KeywordsOutput {
  keywords: Array<{ text: string; score: number }>;
}

const MAX_PHRASE_WORDS = 5;
const CONTENT_POS = new Set(['NOUN', 'PROPN', 'ADJ']);
const HEAD_POS = new Set(['NOUN', 'PROPN']);

/** Long runs are cut from the right, where English puts the head noun. */
function chunk(run: number[]): number[][] {
  const out: number[][] = [];
  for (let end = run.length; end > 0; end -= MAX_PHRASE_WORDS) out.unshift(run.slice(Math.max(0, end - MAX_PHRASE_WORDS), end));
  return out;
}

/**
 * RAKE (Rose et al. 2010) over wink tokens: candidate phrases are runs of content words (nouns,
 * adjectives, gerunds; not stop words) split at everything else and at sentence ends, kept when
 * they hold a noun; word score = degree / frequency; phrase score = sum of its word scores.
 */
export function keywords(input: { text: string; maxResults?: number }): KeywordsOutput {
  const doc = readDoc(input.text);
  const sentenceEnd = new Set(doc.sentenceSpans.map(([, last]) => last));
  const phrases: number[][] = [];
  let current: number[] = [];
  const flush = () => {
    for (const c of chunk(current)) if (c.some((i) => HEAD_POS.has(doc.pos[i] ?? ''))) phrases.push(c);
    current = [];
  };
  for (let i = 0; i < doc.values.length; i++) {
    const norm = doc.normals[i] ?? '';
    const pos = doc.pos[i] ?? '';
    const tagged = CONTENT_POS.has(pos) || (pos === 'VERB' && norm.endsWith('ing'));
    const content = tagged && doc.types[i] === 'word' && !doc.stop[i] && /\p{L}/u.test(norm) && norm.length > 1;
    if (content) current.push(i);
    else flush();
    if (sentenceEnd.has(i)) flush();
  }
  flush();

  // Words are counted by lemma so that "car" and "cars" are one keyword.
  const word = (i: number) => (doc.lemmas[i] || doc.normals[i] || '').toLowerCase();
  const freq = new Map<string, number>();
  const degree = new Map<string, number>();
  for (const p of phrases) {
    for (const i of p) {
      const w = word(i);
      freq.set(w, (freq.get(w) ?? 0) + 1);
      degree.set(w, (degree.get(w) ?? 0) + p.length);
    }
  }
  const best = new Map<string, { text: string; score: number }>();
  for (const p of phrases) {
    const key = p.map(word).join(' ');
    if (best.has(key)) continue;
    const score = p.reduce((s, i) => {
      const w = word(i);
      return s + (degree.get(w) ?? 0) / (freq.get(w) ?? 1);
    }, 0);
    const first = p[0] as number;
    const last = p[p.length - 1] as number;
    const start = doc.starts[first] ?? -1;
    const end = doc.ends[last] ?? -1;
    const text = start >= 0 && end > start ? input.text.slice(start, end) : key;
    best.set(key, { text, score: Math.round(score * 1000) / 1000 });
  }
  const keywords = [...best.values()]
    .sort((a, b) => b.score - a.score || a.text.localeCompare(b.text))
    .slice(0, input.maxResults ?? 10);
  return { keywords };
}
