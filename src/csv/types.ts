/** The shapes migration file validation takes in and gives back (SPEC §1). */

/**
 * Every check a migration file can fail, by name: the `check` of each reported problem, so the
 * web page, the API and scripts can act on it without parsing messages.
 */
export const CHECK_NAMES = [
  /** The file is empty, or has a header but no data row. */
  'empty-file',
  /** Over MAX_FILE_BYTES. */
  'too-large',
  /** Not UTF-8 (UTF-16, Windows-1252…); the line of the first invalid byte sequence. */
  'not-utf8',
  /** The header is separated by semicolons, tabs or bars instead of commas. */
  'not-comma-separated',
  /** Over MAX_DATA_ROWS data rows. */
  'too-many-rows',
  /** A required column (EmailAddress, UserName, Password) is not in the header, or misspelt. */
  'missing-column',
  /** A column that is none of EmailAddress, UserName, Password, UserRoot. */
  'unknown-column',
  /** The same column name twice in the header. */
  'duplicate-column',
  /** Broken RFC 4180 quoting: a quote never closed, a quote inside an unquoted field, text after a closing quote. */
  'quoting',
  /** A row longer than MAX_RECORD_CHARS. */
  'row-too-long',
  /** A row whose number of columns differs from the header's. */
  'column-count',
  /** An empty line (or a row of empty values) before the last data row. */
  'empty-line',
  /** An empty EmailAddress, UserName or Password. */
  'empty-value',
  /** A line break inside a quoted UserName or Password (Alt+Enter in a spreadsheet cell): no one can type it at a login. */
  'line-break-in-value',
  /** EmailAddress is not an email address. */
  'invalid-address',
  /** The same EmailAddress (compared case-insensitively) on two rows. */
  'duplicate-address',
  /** EmailAddress is already in another active batch (only with the `alreadyInActiveBatch` option). */
  'in-active-batch',
  /** The file could not be read at all (CLI: missing file, no permission, a directory). */
  'unreadable-file',
  /** Not a check: the last entry when more problems were found than are listed. */
  'truncated',
] as const;

export type CheckName = (typeof CHECK_NAMES)[number];

export interface Problem {
  /** 1-based physical line of the file (the header is line 1); absent for whole-file problems. */
  line?: number;
  /** The column concerned, by its header name. */
  column?: string;
  check: CheckName;
  /** Plain words for the admin; never contains a password. */
  message: string;
}

export interface MigrationRow {
  /** The line the row starts on (a quoted value may span lines). */
  line: number;
  /** Trimmed: stray spaces around an address are a spreadsheet artefact, never meant. */
  emailAddress: string;
  /** Trimmed, for the same reason. */
  userName: string;
  /** Verbatim: spaces at either end may be part of a password. */
  password: string;
  /** Trimmed; absent when the column is missing or the value is empty. */
  userRoot?: string;
}

export type ValidationResult =
  | { valid: true; rows: MigrationRow[] }
  | { valid: false; rows: number; errors: Problem[] };

export interface ValidateOptions {
  /** Row-level problems to list before "… and N more" (default DEFAULT_MAX_PROBLEMS). */
  maxProblems?: number;
  /**
   * At batch creation: given the file's well-formed, distinct addresses (as written), returns those
   * already in another active batch. Compared case-insensitively. May query a database.
   */
  alreadyInActiveBatch?: (addresses: string[]) => ReadonlyMap<string, string> | Promise<ReadonlyMap<string, string>>;
}

export type ValidateSyncOptions = Omit<ValidateOptions, 'alreadyInActiveBatch'> & {
  alreadyInActiveBatch?: (addresses: string[]) => ReadonlyMap<string, string>;
};
