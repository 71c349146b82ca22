/** `mailferry csv check FILE`: validates a migration file (SPEC §1) before any batch is made of it. */
import { open } from 'node:fs/promises';
import type { Command } from 'commander';
import { fileTooLarge, MAX_FILE_BYTES, type Problem, validateMigrationFile, type ValidationResult } from '../csv/index.js';
import { EXIT } from './exit-codes.js';

const REASONS: Record<string, string> = {
  ENOENT: 'no such file',
  EACCES: 'permission denied',
  EPERM: 'permission denied',
  EISDIR: 'it is a directory',
  ELOOP: 'too many symbolic links',
  ENAMETOOLONG: 'the name is too long',
};

type Read = { ok: true; data: Buffer } | { ok: false; result: ValidationResult; unreadable?: string };

/** The file, or why not. Its size is checked before reading, so a huge file is never loaded. */
async function readMigrationFile(path: string): Promise<Read> {
  try {
    const handle = await open(path, 'r');
    try {
      const stat = await handle.stat();
      if (stat.isDirectory()) return unreadable(path, 'it is a directory');
      if (!stat.isFile()) return unreadable(path, 'it is not a regular file');
      if (stat.size > MAX_FILE_BYTES) return { ok: false, result: fileTooLarge(stat.size) };
      return { ok: true, data: await handle.readFile() };
    } finally {
      await handle.close();
    }
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? '';
    return unreadable(path, REASONS[code] ?? `${(err as Error).message}`);
  }
}

function unreadable(path: string, reason: string): Read {
  const message = `cannot read ${path}: ${reason}`;
  return { ok: false, unreadable: message, result: { valid: false, rows: 0, errors: [{ check: 'unreadable-file', message }] } };
}

function where(p: Problem): string {
  if (p.line === undefined) return '';
  return p.column === undefined ? `line ${p.line}: ` : `line ${p.line}, column ${p.column}: `;
}

function report(path: string, result: ValidationResult): string {
  if (result.valid) return `${path}: valid, ${result.rows.length} row${result.rows.length === 1 ? '' : 's'}\n`;
  // The check's name ends each line (SPEC §1: a message names its check); the "… and N more" entry is not one.
  const lines = result.errors.map((p) => (p.check === 'truncated' ? `${p.message}\n` : `${where(p)}${p.message} [${p.check}]\n`));
  return `${lines.join('')}${path}: NOT valid (${result.rows} data row${result.rows === 1 ? '' : 's'})\n`;
}

/** The `--json` line: SPEC §8 wants `line` on every error, so a whole-file problem has `line: null`. */
function json(result: ValidationResult): string {
  const body = result.valid
    ? { valid: true, rows: result.rows.length, errors: [] }
    : { valid: false, rows: result.rows, errors: result.errors.map((e) => ({ line: e.line ?? null, ...(e.column !== undefined ? { column: e.column } : {}), check: e.check, message: e.message })) };
  return JSON.stringify(body) + '\n';
}

export function registerCsvCommands(program: Command, run: (fn: () => Promise<number>) => Promise<void>): void {
  const csv = program.command('csv').description('Migration files (CSV): one row per mailbox, header EmailAddress,UserName,Password[,UserRoot].');
  csv
    .command('check')
    .description(
      'Check a migration file without storing anything: UTF-8, comma-separated, at most 50,000 rows and 10 MB, the header ' +
        'spelled exactly, every row as wide as the header, quoting, no empty value, valid and distinct addresses. Lists every ' +
        'problem found (up to 100) with its line and column; never shows a password. Exit status: 0 valid, 2 not valid or unreadable.',
    )
    .argument('<file>', 'the migration file')
    .option('--json', 'print { valid, rows, errors } as the last line of stdout (the report then goes to stderr)')
    .action((file: string, flags: { json?: boolean }) =>
      run(async () => {
        const read = await readMigrationFile(file);
        const result = read.ok ? await validateMigrationFile(read.data) : read.result;
        if (!read.ok && read.unreadable) {
          process.stderr.write(`mailferry: ${read.unreadable}\n`);
        } else {
          // Without --json the report is the output, so stdout; with it, stdout stays pure JSON.
          (flags.json ? process.stderr : process.stdout).write(report(file, result));
        }
        if (flags.json) process.stdout.write(json(result));
        return result.valid ? EXIT.ok : EXIT.usage;
      }),
    );
}
