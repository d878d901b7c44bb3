import { readDoc, tokenRange } from './wink';

export type Polarity = 'positive' | 'neutral' | 'negative';

/**
 * |score| below this is neutral. wink's lexicon scores are already in [-1, 1]; 0.05 is the
 * convention of lexicon models such as VADER and keeps mildly worded sentences ("slow though")
 * from reading as neutral.
 */
export const NEUTRAL_BAND = 0.05;

const clamp = (x: number) => (Number.isFinite(x) ? Math.max(-1, Math.min(1, x)) : 0);
const round = (x: number) => Math.round(x * 1e4) / 1e4;
export const polarity = (score: number): Polarity => (score >= NEUTRAL_BAND ? 'positive' : score <= -NEUTRAL_BAND ? 'negative' : 'neutral');

export interface SentimentOutput {
  score: number;
  label: Polarity;
  sentences: Array<{ text: string; score: number; label: Polarity }>;
}

export function sentiment(input: { text: string }): SentimentOutput {
  const doc = readDoc(input.text);
  const sentences = doc.sentenceSpans.map(([first, last], i) => {
    const range = tokenRange(doc, first, last);
    const text = range ? input.text.slice(range[0], range[1]) : doc.values.slice(first, last + 1).join(' ');
    const score = round(clamp(doc.sentenceSentiments[i] ?? 0));
    return { text, score, label: polarity(score) };
  });
  const score = round(clamp(doc.sentiment));
  return { score, label: polarity(score), sentences };
}
