/** Terminal output helpers: tables, bars, money, colors (only on a TTY and without NO_COLOR). */

export interface Out {
  write(s: string): unknown;
  isTTY?: boolean;
  columns?: number;
}

export function colors(stream: Out, env: NodeJS.ProcessEnv = process.env) {
  const on = Boolean(stream.isTTY) && !env.NO_COLOR && env.TERM !== 'dumb';
  const wrap = (open: number, close: number) => (s: string) => (on ? `\x1b[${open}m${s}\x1b[${close}m` : s);
  return { on, bold: wrap(1, 22), dim: wrap(2, 22), red: wrap(31, 39), green: wrap(32, 39), yellow: wrap(33, 39), cyan: wrap(36, 39) };
}
export type Colors = ReturnType<typeof colors>;

/** Visible width, ignoring ANSI color codes. */
export const width = (s: string) => [...s.replace(/\x1b\[[0-9;]*m/g, '')].length;

export interface Column<T> {
  header: string;
  value: (row: T) => string;
  align?: 'left' | 'right';
}

export function table<T>(rows: T[], columns: Array<Column<T>>, c?: Colors): string {
  const cells = rows.map((r) => columns.map((col) => col.value(r)));
  const widths = columns.map((col, i) => Math.max(width(col.header), ...cells.map((row) => width(row[i]!))));
  const pad = (s: string, i: number) => {
    const fill = ' '.repeat(widths[i]! - width(s));
    return columns[i]!.align === 'right' ? fill + s : s + fill;
  };
  const header = columns.map((col, i) => pad(col.header, i)).join('  ').trimEnd();
  const lines = [c ? c.bold(header) : header, ...cells.map((row) => row.map(pad).join('  ').trimEnd())];
  return `${lines.join('\n')}\n`;
}

const EIGHTHS = ['', '▏', '▎', '▍', '▌', '▋', '▊', '▉'];

/** A horizontal bar of `value / max` over `cells` characters, in eighths of a block. */
export function bar(value: number, max: number, cells: number): string {
  if (!(max > 0) || !(value > 0)) return '';
  const eighths = Math.max(1, Math.round((value / max) * cells * 8));
  return '█'.repeat(Math.floor(eighths / 8)) + EIGHTHS[eighths % 8];
}

/** `[██████░░░░]  60%` */
export function progressBar(fraction: number, cells = 24): string {
  const f = Math.min(1, Math.max(0, fraction || 0));
  const full = Math.round(f * cells);
  return `[${'█'.repeat(full)}${'░'.repeat(cells - full)}] ${`${Math.round(f * 100)}%`.padStart(4)}`;
}

/** A labelled bar chart: one line per item, bars scaled to the largest value. */
export function barChart(items: Array<{ label: string; value: number; text: string }>, cells = 40): string {
  const max = Math.max(0, ...items.map((i) => i.value));
  const labelWidth = Math.max(0, ...items.map((i) => width(i.label)));
  return items.map((i) => `${i.label.padEnd(labelWidth)}  ${bar(i.value, max, cells).padEnd(cells)}  ${i.text}`.trimEnd()).join('\n') + (items.length ? '\n' : '');
}

export function money(m: { amountCents: number; currency: string } | null | undefined): string {
  if (!m) return '—';
  const symbol: Record<string, string> = { usd: '$', eur: '€', gbp: '£' };
  const s = symbol[m.currency.toLowerCase()];
  const amount = (Math.abs(m.amountCents) / 100).toFixed(2);
  const sign = m.amountCents < 0 ? '-' : '';
  return s ? `${sign}${s}${amount}` : `${sign}${amount} ${m.currency.toUpperCase()}`;
}

export function minutes(n: number): string {
  return n >= 100 ? n.toFixed(0) : n >= 1 ? n.toFixed(2) : n.toFixed(4);
}

export function seconds(n: number | null | undefined): string {
  if (n == null) return '—';
  return n < 60 ? `${n.toFixed(n < 10 ? 2 : 1)} s` : `${Math.floor(n / 60)} min ${Math.round(n % 60)} s`;
}

export function statusColor(status: string, c: Colors): string {
  if (status === 'SUCCEEDED') return c.green(status);
  if (status === 'FAILED') return c.red(status);
  if (status === 'CANCELED') return c.yellow(status);
  return c.cyan(status);
}

export const SPINNER = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];

/**
 * Redraws a block of lines in place on a TTY (cursor up + clear to end of screen), at most every
 * `minIntervalMs`; `done()` draws the last frame and leaves it on screen.
 */
export class LiveBlock {
  private lines = 0;
  private lastDraw = 0;
  private pending: string[] | null = null;
  private timer: NodeJS.Timeout | null = null;

  constructor(private readonly out: Out, private readonly minIntervalMs = 100) {}

  update(lines: string[]): void {
    this.pending = lines;
    const wait = this.lastDraw + this.minIntervalMs - Date.now();
    if (wait <= 0) this.flush();
    else this.timer ??= setTimeout(() => this.flush(), wait);
  }

  done(lines?: string[]): void {
    if (lines) this.pending = lines;
    this.flush();
  }

  private flush(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    if (!this.pending) return;
    const cols = this.out.columns ?? 120;
    const lines = this.pending.map((l) => (width(l) > cols - 1 ? [...l].slice(0, cols - 2).join('') + '…' : l));
    this.out.write(`${this.lines ? `\x1b[${this.lines}A\r` : ''}\x1b[J${lines.join('\n')}\n`);
    this.lines = lines.length;
    this.pending = null;
    this.lastDraw = Date.now();
  }
}
