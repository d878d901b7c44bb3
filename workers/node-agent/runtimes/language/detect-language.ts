type Franc = typeof import('franc', { with: { 'resolution-mode': 'import' } });
// franc is ESM-only: Node >= 20.19 require()s it; jest transforms it (jest.config.js).
// eslint-disable-next-line @typescript-eslint/no-require-imports
const { francAll } = require('franc') as Franc;

/**
 * Languages considered. franc's full set (187 languages) confuses close relatives on short text
 * (English scores as Scots, French as Sardinian); restricting to widely written languages fixes that.
 */
export const LANGUAGES = (
  'eng deu fra spa por ita nld swe dan nob nno fin pol ces slk hun ron tur hrv bos srp slv lit lvs ekk cat glg ' +
  'ind zlm vie tgl swh afr als azj uzn hau yor ibo zul xho som epo rus ukr bel bul mkd kaz kir tgk tat ' +
  'arb urd pes prs hin mar npi heb ydd cmn jpn kor ben tel tam guj kan mal pan tha sin ell khm hye kat lao amh mya'
).split(' ');

/** franc scores are relative (best = 1); a softmax with this sharpness turns gaps into probabilities. */
const SHARPNESS = 20;
const MAX_ALTERNATIVES = 5;

export interface DetectLanguageOutput {
  language: string;
  confidence: number;
  alternatives: Array<{ language: string; confidence: number }>;
}

const round = (x: number) => Math.round(x * 1e4) / 1e4;

export function detectLanguage(input: { text: string }): DetectLanguageOutput {
  const ranked = francAll(input.text.trim(), { only: LANGUAGES, minLength: 10 }).filter(([code]) => code !== 'und');
  if (ranked.length === 0) return { language: 'und', confidence: 0, alternatives: [] };
  const top = ranked.slice(0, 10);
  const weights = top.map(([, score]) => Math.exp((score - 1) * SHARPNESS));
  const total = weights.reduce((a, b) => a + b, 0);
  const scored = top.map(([language], i) => ({ language, confidence: round((weights[i] ?? 0) / total) }));
  const [best, ...rest] = scored as [(typeof scored)[number], ...typeof scored];
  return { language: best.language, confidence: best.confidence, alternatives: rest.slice(0, MAX_ALTERNATIVES) };
}
