/** The CLI's logger: pino to stderr, with password fields redacted as a second guard. */
import { pino, type Logger } from 'pino';
import { UsageError } from './exit-codes.js';

const LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'];
const LEVEL_WORDS: Record<number, string> = { 10: 'trace', 20: 'debug', 30: 'info', 40: 'warning', 50: 'error', 60: 'fatal' };
/** pino's own fields, not the record's facts. */
const PINO_FIELDS = new Set(['level', 'time', 'pid', 'hostname', 'msg', 'v']);

/**
 * One pino record as a line an admin reads at a terminal: `warning: message (folder=INBOX,
 * uid=7, keywords=[a, b])`. Starts by clearing the terminal line, where a progress bar may
 * be drawn (it draws itself again on its next update).
 */
/** Control characters (a folder name or a server's text may hold ESC, CR, LF) shown as escapes, so no record can move the cursor or forge a line. */
const visible = (s: string): string => s.replace(/[\u0000-\u001f\u007f-\u009f]/g, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`);

export function humanLogLine(json: string): string {
  let r: Record<string, unknown>;
  try {
    r = JSON.parse(json) as Record<string, unknown>;
  } catch {
    return json;
  }
  const facts = Object.entries(r)
    .filter(([k]) => !PINO_FIELDS.has(k))
    .map(([k, v]) => `${k}=${Array.isArray(v) ? `[${v.map((x) => (typeof x === 'object' ? JSON.stringify(x) : String(x))).join(', ')}]` : typeof v === 'object' && v !== null ? JSON.stringify(v) : String(v)}`);
  const level = LEVEL_WORDS[Number(r.level)] ?? 'log';
  return `\r\x1b[K${level}: ${visible(`${String(r.msg ?? '')}${facts.length ? ` (${facts.join(', ')})` : ''}`)}\n`;
}

/**
 * `human`: records as lines for a person at a terminal (humanLogLine); otherwise JSON
 * lines, for files, pipes and log collectors.
 */
export function cliLogger(level: string, opts: { human?: boolean } = {}): Logger {
  // A usage error (exit 2) in our words, not pino's "default level:… must be included in custom levels".
  if (!LEVELS.includes(level)) throw new UsageError(`--log-level must be one of ${LEVELS.join(', ')}, not "${level}"`);
  const options = { level, redact: { paths: ['password', '*.password', '*.*.password', 'pass', '*.pass'], censor: '[redacted]' } };
  if (opts.human) return pino(options, { write: (line: string) => void process.stderr.write(humanLogLine(line)) });
  return pino(options, pino.destination(2));
}
