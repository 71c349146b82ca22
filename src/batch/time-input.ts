/**
 * Times an admin types: `--start-at` (a date and time, or `+DURATION` from now) and
 * `--received-after` (a date in the past, or `-DURATION`). Shared by the CLI and the HTTP API.
 */
import { parseDuration } from './duration.js';

/** A time that cannot be read; the message names the flag and shows the accepted forms. */
export class TimeInputError extends Error {
  override name = 'TimeInputError';
}

/** ISO 8601 (local time unless it says Z or an offset), or `+DURATION` from now. */
export function parseTime(text: string, flag: string, now = Date.now()): number {
  if (text.startsWith('+')) {
    const d = parseDuration(text.slice(1));
    if (d !== null) return now + d;
  } else if (/^\d{4}-\d{2}-\d{2}/.test(text)) {
    const t = Date.parse(text);
    if (!Number.isNaN(t)) return t;
  }
  throw new TimeInputError(`${flag} must be a date and time like 2025-03-01T18:00 (local time; add Z or +01:00 for another zone) or +DURATION like +2h, not "${text}"`);
}

/**
 * A `--received-after` cut-off: a date as parseTime reads it, or `-DURATION` (`-90d`: mail
 * of the last 90 days). A cut-off in the future would copy nothing: refused, as is `+2h`
 * (the form of `--start-at`).
 */
export function parseReceivedAfter(text: string, flag: string, now = Date.now()): number {
  if (text.startsWith('-')) {
    const d = parseDuration(text.slice(1));
    if (d !== null) return now - d;
    throw new TimeInputError(`${flag} must be a date like 2025-03-01 or -DURATION like -90d, not "${text}"`);
  }
  if (text.startsWith('+')) throw new TimeInputError(`${flag} is a date in the past (2025-03-01) or -DURATION (-90d: the last 90 days); "${text}" would copy nothing`);
  let t: number;
  try {
    t = parseTime(text, flag, now);
  } catch {
    // parseTime's own words would offer +DURATION, which is refused here.
    throw new TimeInputError(`${flag} must be a date like 2025-03-01 (or 2025-03-01T18:00, local time unless it says Z) or -DURATION like -90d, not "${text}"`);
  }
  if (t > now) throw new TimeInputError(`${flag} ${text} is in the future: no message was received after it`);
  return t;
}

/**
 * A `--start-at` time: as parseTime reads it, not in the past (a minute's grace for the
 * time it took to type): a past time would start the batch at once, which `--autostart`
 * says plainly; a typo in the year should not.
 */
export function parseStartAt(text: string, flag: string, now = Date.now()): number {
  const t = parseTime(text, flag, now);
  if (t < now - 60_000) throw new TimeInputError(`${flag} ${text} is in the past; to start at once use ${flag === 'startAt' ? 'start "now"' : '--autostart'}`);
  return t;
}
