/** The header row: the column names SPEC §1 allows, spelled exactly, and help for near misses. */
import type { ProblemList } from './problems.js';

export const REQUIRED_COLUMNS = ['EmailAddress', 'UserName', 'Password'] as const;
export const OPTIONAL_COLUMNS = ['UserRoot'] as const;
export type ColumnName = (typeof REQUIRED_COLUMNS)[number] | (typeof OPTIONAL_COLUMNS)[number];
const ALL_COLUMNS: readonly ColumnName[] = [...REQUIRED_COLUMNS, ...OPTIONAL_COLUMNS];

const EXPECTED = 'EmailAddress, UserName, Password and optionally UserRoot';

/** Names people give these columns in other tools' templates, compared after `squash`. */
const ALIASES: Record<string, ColumnName> = {
  email: 'EmailAddress', mail: 'EmailAddress', emailaddr: 'EmailAddress', mailaddress: 'EmailAddress',
  address: 'EmailAddress', emailid: 'EmailAddress', primarysmtpaddress: 'EmailAddress', smtpaddress: 'EmailAddress',
  userprincipalname: 'EmailAddress', upn: 'EmailAddress', targetaddress: 'EmailAddress', targetemail: 'EmailAddress',
  user: 'UserName', login: 'UserName', loginname: 'UserName', userid: 'UserName', account: 'UserName',
  sourceuser: 'UserName', sourceusername: 'UserName', sourcelogin: 'UserName',
  pass: 'Password', passwd: 'Password', pwd: 'Password', pw: 'Password', sourcepassword: 'Password', userpassword: 'Password',
  root: 'UserRoot', rootfolder: 'UserRoot', folderroot: 'UserRoot', userfolder: 'UserRoot',
};

/** Case, spaces, punctuation and accents folded away: what makes `Email Address` a near miss. */
function squash(name: string): string {
  return name.normalize('NFKD').toLowerCase().replace(/[^a-z0-9]/g, '');
}

function editDistance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const cur = [i];
    for (let j = 1; j <= b.length; j++) {
      cur[j] = Math.min((prev[j] as number) + 1, (cur[j - 1] as number) + 1, (prev[j - 1] as number) + (a[i - 1] === b[j - 1] ? 0 : 1));
    }
    prev = cur;
  }
  return prev[b.length] as number;
}

/** The column `name` was probably meant to be (`Email Address`, `emailaddress`, `Pasword`…), if any. */
export function nearestColumn(name: string): ColumnName | undefined {
  const s = squash(name);
  if (s === '') return undefined;
  const alias = ALIASES[s];
  if (alias) return alias;
  let best: ColumnName | undefined;
  let bestDistance = 3; // two typos at most: further than that it is another word
  for (const c of ALL_COLUMNS) {
    const d = editDistance(s, c.toLowerCase());
    if (d < bestDistance) {
      best = c;
      bestDistance = d;
    }
  }
  return best;
}

export interface Header {
  /** The 0-based position of each known column (its first occurrence). */
  index: Partial<Record<ColumnName, number>>;
  /** How many columns every row must have. */
  width: number;
  /**
   * Columns before the header's trailing unnamed ones: Excel writes `…,Password,,` (and
   * `…,pw,,` on every row) when cells right of the table were ever formatted. Rows may
   * have from `named` to `width` columns, with nothing in the unnamed ones.
   */
  named: number;
  /** Set when the header is split by another character (`;` from a European Excel): the rows are not checked one by one, every one would repeat that. */
  wrongSeparator?: true;
  /** False when the line is not a header at all (a data row, another separator). */
  recognised: boolean;
}

const SEPARATORS: [string, string][] = [
  [';', 'semicolons'],
  ['\t', 'tabs'],
  ['|', 'vertical bars'],
];

/** Checks the header row and says where each column is. */
export function readHeader(fields: string[], line: number, problems: ProblemList): Header {
  let named = fields.length;
  while (named > 1 && (fields[named - 1] as string).trim() === '') named--;
  const header: Header = { index: {}, width: fields.length, named, recognised: false };
  const only = fields.length === 1 ? (fields[0] as string) : '';
  const separator = SEPARATORS.find(([sep]) => only.includes(sep));
  if (separator) {
    // Nothing else about the header means anything until it is split right, so this is the one problem.
    problems.addFileLevel({
      line,
      check: 'not-comma-separated',
      // Excel writes the list separator of the Windows region settings, ";" in much of
      // Europe, even for "CSV UTF-8 (Comma delimited)": the advice has to say so.
      text:
        `the header is separated by ${separator[1]}, not commas: the file must be comma-separated CSV (in Excel: Save As "CSV UTF-8 (Comma delimited)"; ` +
        `where Windows' list separator is ";" Excel writes semicolons even then: set it to "," in the region settings, or replace ; with , in a text editor)`,
    });
    return { ...header, wrongSeparator: true };
  }

  const exact = new Set(fields.filter((f): f is ColumnName => (ALL_COLUMNS as readonly string[]).includes(f)));
  const near = fields.map((f) => (exact.has(f as ColumnName) ? undefined : nearestColumn(f)));
  // A value that is an address: a data row where the header should be, whatever the
  // other values look like (a password such as `Passw0rd` is a near miss of "Password").
  const holdsAddress = fields.some((f) => /^[^@\s]+@[^@\s]+$/.test(f.trim()));
  if (exact.size === 0 && (holdsAddress || near.every((n) => n === undefined))) {
    // Its values are never quoted: one may be a password.
    const data = holdsAddress || fields.some((f) => f.includes('@')) ? '; it looks like a data row: add the header line above it' : '';
    problems.add({
      line,
      check: 'missing-column',
      text: `the first line must be the header (${EXPECTED}); none of its ${fields.length} columns has one of these names${data}`,
    });
    return header;
  }

  header.recognised = true;
  const dataInHeader = fields.some((f) => f.includes('@') || /[\r\n]/.test(f));
  const misspelt = new Map<ColumnName, { name: string; position: number }>();
  fields.forEach((name, i) => {
    const position = i + 1;
    if (exact.has(name as ColumnName)) {
      const column = name as ColumnName;
      const first = header.index[column];
      if (first === undefined) header.index[column] = i;
      else problems.add({ line, column, check: 'duplicate-column', text: `the column "${column}" appears twice in the header (columns ${first + 1} and ${position})` });
      return;
    }
    if (name.trim() === '') {
      if (i >= named) return; // trailing, as Excel writes them
      problems.add({ line, check: 'unknown-column', text: `column ${position} of the header has no name (a stray comma?); the columns are ${EXPECTED}` });
      return;
    }
    const hint = SEPARATORS.filter(([sep]) => name.includes(sep)).map(([, what]) => `; it contains ${what}: the file must be comma-separated`).join('');
    // A header that holds data (an address, a line break: rows run together) may hold a
    // password among its unknown names (`Passw0rd` is a near miss of "Password"): those
    // are named by position only.
    if (dataInHeader) {
      problems.add({ line, check: 'unknown-column', text: `column ${position} of the header is not a column name but looks like data (rows run together, or the header line is missing); the columns are ${EXPECTED}${hint}` });
      return;
    }
    const meant = near[i];
    if (meant && !exact.has(meant) && !misspelt.has(meant) && (REQUIRED_COLUMNS as readonly string[]).includes(meant)) {
      misspelt.set(meant, { name, position }); // reported once, as the missing column it stands for
      return;
    }
    const text =
      meant && exact.has(meant)
        ? `unknown column {value} (column ${position}); it looks like "${meant}", which is already in the header${hint}`
        : meant
          ? `unknown column {value} (column ${position}); did you mean "${meant}"? Column names must be spelled exactly${hint}`
          : `unknown column {value} (column ${position}); the columns are ${EXPECTED}${hint}`;
    problems.add({ line, column: name, check: 'unknown-column', text, value: name });
  });

  for (const column of REQUIRED_COLUMNS) {
    if (exact.has(column)) continue;
    const m = misspelt.get(column);
    problems.add(
      m
        ? { line, column: m.name, check: 'missing-column', value: m.name, text: `no "${column}" column: {value} (column ${m.position}) looks like it, but the name must be spelled exactly "${column}" (no spaces, capitals as shown)` }
        : { line, check: 'missing-column', text: `no "${column}" column; the header must have ${EXPECTED}` },
    );
  }
  return header;
}
