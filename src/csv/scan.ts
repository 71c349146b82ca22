/** One pass over a migration file: every check of SPEC §1 but the active-batch one, which needs the database. */
import { MAYBE_PASSWORD } from './problems.js';
import { addressKey, addressProblem } from './address.js';
import { type ColumnName, type Header, readHeader, REQUIRED_COLUMNS } from './columns.js';
import { n, tooLargeText } from './format.js';
import { MAX_DATA_ROWS, MAX_FILE_BYTES, MAX_RECORD_CHARS } from './limits.js';
import { LineIndex } from './lines.js';
import { type BreakKind, readRecords } from './parse.js';
import { ProblemList } from './problems.js';
import { ValidRow } from './row.js';
import type { MigrationRow } from './types.js';

/** Empty or blanks only; a regex rather than trim() so that the per-row check allocates nothing. */
const BLANK = /^\s*$/;

/** What one pass over the file found. */
export interface Scan {
  problems: ProblemList;
  rows: MigrationRow[];
  dataRows: number;
  /** Every password of the file, so that no message can quote one (an array: only an invalid file needs a lookup). */
  passwords: string[];
  /** Well-formed addresses at their first occurrence (as written), for the active-batch check. */
  addresses: string[];
  /** The line of each of `addresses` (parallel arrays: no object per row). */
  addressLines: number[];
}

const BREAK_TEXT: Record<BreakKind | 'unclosed-quote-swallowing', string> = {
  'quote-in-unquoted-field': 'a quote (") inside a value that does not start with one: put the whole value in quotes and double the quotes inside it, e.g. "pa""ss"',
  'text-after-closing-quote': 'text after the closing quote of a quoted value, or a quote that is never closed: a quote inside a quoted value must be doubled ("")',
  'unclosed-quote': 'a quote opens this value and is never closed (checking went on from the next line)',
  'unclosed-quote-long': `a quote opens this value and is not closed within ${n(MAX_RECORD_CHARS)} characters (checking went on from the next line)`,
  'row-too-long': `the row is longer than ${n(MAX_RECORD_CHARS)} characters`,
  'unclosed-quote-swallowing': 'this quoted value runs over lines {lines} and holds what look like whole rows: a quote left open, closed by a stray quote further down?',
};

/**
 * Whether a line of a multi-line value looks like a row of its own (as many commas as a row has).
 * RFC 4180 allows line breaks in quoted values, and csv-parse rightly reads an open quote up to the
 * next quote in the file, turning the rows in between into one value that raises no error. No real
 * address, login, password or folder has a line holding a row's worth of commas.
 */
function holdsRows(value: string, width: number): boolean {
  const commas = Math.max(width - 1, 2);
  return value
    .split(/\r\n|\n|\r/)
    .slice(1)
    .some((l) => l.split(',').length - 1 >= commas);
}

export function scan(file: Buffer, maxProblems: number): Scan {
  const problems = new ProblemList(maxProblems);
  const result: Scan = { problems, rows: [], dataRows: 0, passwords: [], addresses: [], addressLines: [] };

  if (file.length > MAX_FILE_BYTES) {
    // Not parsed at all: the limit is there so nobody can make us parse an arbitrarily large upload.
    problems.addFileLevel({ check: 'too-large', text: tooLargeText(file.length) });
    return result;
  }
  if ((file[0] === 0xff && file[1] === 0xfe) || (file[0] === 0xfe && file[1] === 0xff) || file.subarray(0, 4096).includes(0)) {
    // UTF-16 (Excel's "Unicode Text") or binary: parsing it would only produce noise.
    problems.addFileLevel({ line: 1, check: 'not-utf8', text: 'the file is UTF-16 or not text at all; save it as "CSV UTF-8 (Comma delimited)"' });
    return result;
  }

  const lines = new LineIndex(file);
  const invalid = lines.invalidUtf8Lines();
  if (invalid) {
    // The rows are still checked: the structure (commas, quotes) is ASCII and reads the same.
    const more = invalid.count > 1 ? ` (${n(invalid.count)} lines have such bytes)` : '';
    problems.addFileLevel({
      line: invalid.first,
      check: 'not-utf8',
      text: `the file is not UTF-8: this line has bytes that are not UTF-8${more}; save it as "CSV UTF-8 (Comma delimited)"`,
    });
  }

  const bom = file[0] === 0xef && file[1] === 0xbb && file[2] === 0xbf ? 3 : 0;
  let header: Header | undefined;
  let headerBroken = false;
  let blank: { first: number; last: number } | undefined;
  let overLimitLine = 0;
  const firstLineOf = new Map<string, number>();
  const columnAt = (i: number) => (Object.keys(header?.index ?? {}) as ColumnName[]).find((c) => header?.index[c] === i);

  /** Empty lines are fine at the end of the file only, so a run is judged when a row follows it. */
  const flushBlank = () => {
    if (!blank) return;
    const { first, last } = blank;
    blank = undefined;
    const text = header
      ? `${first === last ? 'empty line' : `lines ${first}–${last} are empty`}; empty lines are allowed only at the end of the file`
      : `the file starts with ${first === last ? 'an empty line' : `${last - first + 1} empty lines`}; the header must be the first line`;
    problems.add({ line: first, check: 'empty-line', text });
  };

  const countRow = (line: number) => {
    result.dataRows++;
    if (result.dataRows === MAX_DATA_ROWS + 1) overLimitLine = line;
  };

  const checkRow = (fields: string[], line: number, breaks: number, h: Header) => {
    if (h.wrongSeparator) return;
    const at = (i: number | undefined) => (i === undefined ? undefined : fields[i]);
    const password = at(h.index.Password);
    if (password) result.passwords.push(password);
    const swallowing = new Set<number>();
    for (let i = 0; breaks > 0 && i < fields.length; i++) {
      if (holdsRows(fields[i] as string, h.width)) {
        swallowing.add(i);
        const column = columnAt(i);
        problems.add({ line, ...(column ? { column } : {}), check: 'quoting', text: BREAK_TEXT['unclosed-quote-swallowing'].replace('{lines}', `${line}–${line + breaks}`) });
      }
    }
    if (fields.length >= h.named && fields.length <= h.width && fields.length !== h.width) fields = [...fields, ...Array<string>(h.width - fields.length).fill('')];
    const stray = fields.slice(h.named).findIndex((f) => !BLANK.test(f));
    if (fields.length === h.width && stray >= 0) {
      problems.add({ line, check: 'column-count', text: `the row has a value in column ${h.named + stray + 1}, which the header does not name; a comma inside a value? Put that value in quotes` });
      return;
    }
    if (fields.length !== h.width) {
      const hint =
        fields.length === 1 && /[;\t|]/.test(fields[0] as string)
          ? '; it looks separated by semicolons or tabs: the file must be comma-separated'
          : fields.length > h.width
            ? '; a comma inside a value? Put that value in quotes'
            : '';
      problems.add({ line, check: 'column-count', text: `the row has ${fields.length} columns, the header has ${h.width}${hint}` });
      return; // its values are probably shifted: checking them would only add noise
    }
    let complete = true;
    for (const column of REQUIRED_COLUMNS) {
      const value = at(h.index[column]);
      if (value === undefined) complete = false;
      else if (BLANK.test(value)) {
        complete = false;
        problems.add({ line, column, check: 'empty-value', text: `the ${column} value is empty` });
      }
    }
    for (const column of ['UserName', 'Password'] as const) {
      // Never quoted (it may be the password): the line and column say where.
      const i = h.index[column];
      if (i !== undefined && !swallowing.has(i) && /[\r\n]/.test(fields[i] ?? '')) {
        complete = false;
        problems.add({ line, column, check: 'line-break-in-value', text: `the ${column} value holds a line break (Alt+Enter in a spreadsheet cell?): no one can type it at a login` });
      }
    }
    const email = at(h.index.EmailAddress)?.trim();
    if (email) {
      const why = addressProblem(email);
      const key = addressKey(email);
      const first = firstLineOf.get(key);
      // The one value we quote; a password pasted into it, even as a part, must not come out with it.
      // (Below 4 characters a part says nothing, and hiding every address holding an "e" would help nobody.)
      const hide = !!password && (email === password || (password.length >= 4 && email.includes(password)));
      if (why) {
        problems.add({ line, column: 'EmailAddress', check: 'invalid-address', value: email, hide: hide || (email.includes('@') ? false : MAYBE_PASSWORD), text: `{value} is not an email address: it ${why}` });
      } else if (first !== undefined) {
        problems.add({ line, column: 'EmailAddress', check: 'duplicate-address', value: email, hide, text: `{value} is also on line ${first} (addresses are compared ignoring case, Unicode form and IDN encoding)` });
      } else {
        firstLineOf.set(key, line);
        result.addresses.push(email);
        result.addressLines.push(line);
      }
    }
    if (complete && email !== undefined && password !== undefined) {
      result.rows.push(new ValidRow(line, email, (at(h.index.UserName) as string).trim(), password, at(h.index.UserRoot)?.trim() || undefined));
    }
  };

  readRecords(file, bom, lines, {
    record(fields, line, breaks) {
      if (fields.every((f) => BLANK.test(f))) {
        // A row of empty values (`,,,`, which spreadsheets write for formatted empty rows) is an empty line.
        blank = blank ? { first: blank.first, last: line } : { first: line, last: line };
        return;
      }
      flushBlank();
      if (!header) {
        header = readHeader(fields, line, problems);
        return;
      }
      countRow(line);
      checkRow(fields, line, breaks, header);
    },
    broken(kind, line, field) {
      flushBlank();
      const column = header ? columnAt(field) : undefined;
      problems.add({ line, ...(column ? { column } : {}), check: kind === 'row-too-long' ? 'row-too-long' : 'quoting', text: BREAK_TEXT[kind] });
      if (!header) {
        headerBroken = true; // without a header no row can be checked
        return 'stop';
      }
      countRow(line);
      return 'continue';
    },
  });

  if (!header && !headerBroken) {
    problems.addFileLevel({ check: 'empty-file', text: 'the file is empty: it needs a header line and at least one data row' });
  } else if (header?.recognised && result.dataRows === 0) {
    problems.addFileLevel({ check: 'empty-file', text: 'the file has a header but no data row' });
  }
  if (result.dataRows > MAX_DATA_ROWS) {
    problems.addFileLevel({
      line: overLimitLine,
      check: 'too-many-rows',
      text: `the file has ${n(result.dataRows)} data rows; at most ${n(MAX_DATA_ROWS)} are allowed (row ${n(MAX_DATA_ROWS + 1)} starts on this line): split it into several batches`,
    });
  }
  return result;
}
