/** Physical line numbers of a file, from byte offsets. */
import { isUtf8 } from 'node:buffer';

const LF = 0x0a;
const CR = 0x0d;

/**
 * Where each line starts. We count lines ourselves rather than trust csv-parse's `info.lines`:
 * it counts a CRLF inside a quoted value as two lines, which would shift every later line number
 * of a Windows file with a multi-line value.
 */
export class LineIndex {
  /** Offsets of the bytes that end a line. */
  private readonly ends: number[] = [];

  /**
   * A line ends at LF, CRLF (its LF) or a lone CR, all three in one file: a classic-Mac
   * (CR) file from "CSV (Macintosh)" with a row appended by `echo >>` has both, and taking
   * one kind for the whole file read it as one line, its passwords as column names.
   */
  constructor(private readonly file: Buffer) {
    for (let i = 0; i < file.length; i++) {
      const b = file[i];
      if (b === LF || (b === CR && file[i + 1] !== LF)) this.ends.push(i);
    }
  }

  /** The 1-based line that holds the byte at `offset`. */
  lineAt(offset: number): number {
    let lo = 0;
    let hi = this.ends.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if ((this.ends[mid] as number) < offset) lo = mid + 1;
      else hi = mid;
    }
    return lo + 1;
  }

  /** Offset of the first byte of `line`, or undefined when the file has no such line. */
  lineStart(line: number): number | undefined {
    if (line === 1) return 0;
    const end = this.ends[line - 2];
    return end === undefined || end + 1 >= this.file.length ? undefined : end + 1;
  }

  /** The byte range of `line`, without its line ending. */
  private lineRange(line: number): [number, number] {
    const start = this.lineStart(line) ?? this.file.length;
    const end = this.ends[line - 1] ?? this.file.length;
    return [start, end];
  }

  /**
   * Lines holding bytes that are not UTF-8: the first one and how many. Checked line by line, which
   * is exact because a line-ending byte never occurs inside a multi-byte UTF-8 sequence.
   */
  invalidUtf8Lines(): { first: number; count: number } | undefined {
    if (isUtf8(this.file)) return undefined;
    let first = 0;
    let count = 0;
    for (let line = 1; line <= this.ends.length + 1; line++) {
      const [start, end] = this.lineRange(line);
      if (!isUtf8(this.file.subarray(start, end))) {
        if (first === 0) first = line;
        count++;
      }
    }
    // The lines cover every byte but the (ASCII) line endings, so some line failed; the fallback only satisfies the types.
    return { first: first || 1, count: Math.max(count, 1) };
  }
}
