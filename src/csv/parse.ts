/**
 * Reads the records of a migration file with csv-parse (RFC 4180), carrying on past broken rows so
 * every problem in the file can be reported, not just the first.
 */
import { CsvError, type Options, parse } from 'csv-parse/sync';
import { MAX_RECORD_CHARS } from './limits.js';
import type { LineIndex } from './lines.js';

/** How a row's quoting is broken. */
export type BreakKind =
  /** `pa"ss`: a quote inside a field that does not start with one. */
  | 'quote-in-unquoted-field'
  /** `"pa"ss`: text after a closing quote (also what a quote left open earlier usually ends in). */
  | 'text-after-closing-quote'
  /** A quote still open at the end of the file. */
  | 'unclosed-quote'
  /** A quoted value still open after MAX_RECORD_CHARS characters: in practice, a quote left open. */
  | 'unclosed-quote-long'
  /** An unquoted row longer than MAX_RECORD_CHARS. */
  | 'row-too-long';

export interface RecordSink {
  /** A record, with the line it starts on and how many line breaks its values hold (0 nearly always). */
  record(fields: string[], line: number, breaks: number): void;
  /** A row csv-parse could not read: the line its broken field starts on, and that field's 0-based position. */
  broken(kind: BreakKind, line: number, field: number): 'continue' | 'stop';
}

const COMMA = 0x2c;
const QUOTE = 0x22;

const OPTIONS: Options = {
  bom: false, // the caller skips it, so offsets are plain file offsets
  encoding: 'utf8',
  relax_column_count: true, // the caller reports column counts, with the header's names
  max_record_size: MAX_RECORD_CHARS,
  // Every line end, whatever the first line used (lines.ts): csv-parse otherwise takes the
  // first line's for the whole file, and a row appended with `echo >>` to an Excel (CRLF)
  // file kept a line-end character in its last value, the password, which then never logs
  // in; a CR file with an LF row was one record.
  record_delimiter: ['\r\n', '\n', '\r'],
};

/** Line breaks in a value: CRLF, LF and lone CR each count once (as LineIndex counts them). */
function lineBreaks(s: string): number {
  let n = 0;
  for (let i = 0; i < s.length; i++) if (s[i] === '\n' || (s[i] === '\r' && s[i + 1] !== '\n')) n++;
  return n;
}

/**
 * Feeds every record of `file` from byte `start` (past any BOM) to `sink`.
 *
 * csv-parse stops at a quoting error and cannot resynchronise by itself (`skip_records_with_error`
 * keeps it inside the open quote, so the following rows are swallowed or misread). So on such an
 * error we note it and parse again from the line after the broken field starts: a migration file
 * holds one row per line, so that is where the next row almost always is.
 *
 * Line numbers are counted here, from the line breaks inside the values, rather than taken from an
 * `on_record` context: that context costs csv-parse two object copies per row (about 1.6 times the
 * parse time of a 50,000-row file), and its `info.lines` counts a CRLF inside a quoted value as two lines.
 */
export function readRecords(file: Buffer, start: number, lines: LineIndex, sink: RecordSink): void {
  let base: number | undefined = start;
  let line = lines.lineAt(start);
  while (base !== undefined) {
    const segment = base;
    let records: string[][];
    let broken: { kind: BreakKind; line: number; field: number } | undefined;
    try {
      records = parse(file.subarray(segment), OPTIONS);
    } catch (err) {
      if (!(err instanceof CsvError)) throw err;
      // Never pass on err.message or the error's fields: they quote the broken value, which may be a password.
      // `bytes` is where the last complete record ended or, once a field of this record is complete,
      // the comma after it: either way the broken field starts right there.
      const info = err as CsvError & { bytes?: number; column?: number | string | null };
      const field = typeof info.column === 'number' ? info.column : 0;
      let fieldStart = segment + (info.bytes ?? 0);
      if (field > 0 && file[fieldStart] === COMMA) fieldStart++;
      let kind: BreakKind;
      switch (err.code) {
        case 'INVALID_OPENING_QUOTE':
          kind = 'quote-in-unquoted-field';
          break;
        case 'CSV_INVALID_CLOSING_QUOTE':
          kind = 'text-after-closing-quote';
          break;
        case 'CSV_QUOTE_NOT_CLOSED':
          kind = 'unclosed-quote';
          break;
        case 'CSV_MAX_RECORD_SIZE':
          kind = file[fieldStart] === QUOTE ? 'unclosed-quote-long' : 'row-too-long';
          break;
        default:
          throw err; // an option error: a bug here, not a problem in the file
      }
      broken = { kind, line: lines.lineAt(fieldStart), field };
      // The sync API drops the records it had read when it throws: read the (well-formed) part before
      // the broken field again. With field > 0 its last record is the broken row's complete fields.
      records = fieldStart > segment ? parse(file.subarray(segment, fieldStart), OPTIONS) : [];
      if (field > 0) records.pop();
    }
    for (const fields of records) {
      let breaks = 0;
      for (const f of fields) if (f.includes('\n') || f.includes('\r')) breaks += lineBreaks(f);
      sink.record(fields, line, breaks);
      line += 1 + breaks;
    }
    if (!broken) return;
    if (sink.broken(broken.kind, broken.line, broken.field) === 'stop') return;
    line = broken.line + 1;
    base = lines.lineStart(line);
  }
}
