/** Collects the problems found in a file: capped, in line order, with values quoted safely. */
import { DEFAULT_MAX_PROBLEMS, MAX_QUOTED_CHARS } from './limits.js';
import type { CheckName, Problem } from './types.js';

interface Pending {
  line?: number;
  column?: string;
  check: CheckName;
  /** The message; `{value}` stands for the quoted value, filled in only when rendering. */
  text: string;
  value?: string;
  /** Set when `value` contains its row's password (pasted into the wrong column), or may be
   * a password (an "address" without @: columns swapped): never shown, the reason said instead. */
  hide?: boolean | string;
}

/** Shown instead of a value that is also a password somewhere in the file. */
const HIDDEN = 'the value (hidden: it is also a password in this file)';
/** Shown instead of an EmailAddress value without @: it may be the row's password, in the wrong column. */
export const MAYBE_PASSWORD = 'the value (not shown: without an @ it may be a password; are the columns swapped?)';

export class ProblemList {
  /** Whole-file problems: few, and always listed, so the cap can never hide why a file is rejected. */
  private readonly fileLevel: Pending[] = [];
  private readonly rowLevel: Pending[] = [];
  private notListed = 0;

  constructor(private readonly cap: number = DEFAULT_MAX_PROBLEMS) {}

  /** A problem with a row or a column. Past the cap it is only counted. */
  add(p: Pending): void {
    if (this.rowLevel.length < this.cap) this.rowLevel.push(p);
    else this.notListed++;
  }

  addFileLevel(p: Pending): void {
    this.fileLevel.push(p);
  }

  get count(): number {
    return this.fileLevel.length + this.rowLevel.length + this.notListed;
  }

  /** Every value a listed problem would show (quoted values and column names). */
  quotedValues(): Set<string> {
    const values = new Set<string>();
    for (const p of [...this.fileLevel, ...this.rowLevel]) {
      if (p.value !== undefined) values.add(p.value);
      if (p.column !== undefined) values.add(p.column);
    }
    return values;
  }

  /**
   * The final list. Values are quoted only here, once every password of the file is known, so a
   * value that is also a password (an address column shifted into the password one, a data row
   * taken for the header) is never shown.
   */
  render(isPassword: (value: string) => boolean): Problem[] {
    const all = [...this.fileLevel, ...this.rowLevel].sort((a, b) => (a.line ?? 0) - (b.line ?? 0));
    const out: Problem[] = all.map((p) => {
      const message = p.value === undefined ? p.text : p.text.replaceAll('{value}', typeof p.hide === 'string' ? p.hide : p.hide ? HIDDEN : quote(p.value, isPassword));
      // Key order line, column, check, message: the order people read a JSON report in.
      return {
        ...(p.line !== undefined ? { line: p.line } : {}),
        ...(p.column !== undefined ? { column: isPassword(p.column) ? HIDDEN : p.column } : {}),
        check: p.check,
        message,
      };
    });
    if (this.notListed > 0) {
      out.push({ check: 'truncated', message: `… and ${this.notListed} more problem${this.notListed === 1 ? '' : 's'} (only the first ${this.cap} are listed)` });
    }
    return out;
  }
}

function quote(value: string, isPassword: (value: string) => boolean): string {
  if (isPassword(value)) return HIDDEN;
  const cut = [...value].length > MAX_QUOTED_CHARS ? [...value].slice(0, MAX_QUOTED_CHARS).join('') + '…' : value;
  // JSON quoting shows control characters and stray quotes instead of letting them garble the output.
  return JSON.stringify(cut);
}
