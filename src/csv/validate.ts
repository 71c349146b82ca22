/** Migration file validation (SPEC §1): every check, every problem found (capped), never a password. */
import { tooLargeText } from './format.js';
import { DEFAULT_MAX_PROBLEMS } from './limits.js';
import { type Scan, scan } from './scan.js';
import type { ValidateOptions, ValidateSyncOptions, ValidationResult } from './types.js';

/** The result for a file too large to read (the CLI knows its size without reading it). */
export function fileTooLarge(size: number): ValidationResult {
  return { valid: false, rows: 0, errors: [{ check: 'too-large', message: tooLargeText(size) }] };
}

/** `active`: address → the batch that holds it. */
function markActive(s: Scan, active: ReadonlyMap<string, string>): void {
  if (active.size === 0) return;
  const lower = new Map([...active].map(([a, batch]) => [a.toLowerCase(), batch]));
  s.addresses.forEach((address, i) => {
    const batch = lower.get(address.toLowerCase());
    if (batch !== undefined) {
      s.problems.add({ line: s.addressLines[i], column: 'EmailAddress', check: 'in-active-batch', value: address, text: `{value} is already in another active batch (${JSON.stringify(batch)})` });
    }
  });
}

function finish(s: Scan): ValidationResult {
  if (s.problems.count === 0) return { valid: true, rows: s.rows };
  const quoted = s.problems.quotedValues();
  const hidden = new Set(s.passwords.filter((p) => quoted.has(p)));
  return { valid: false, rows: s.dataRows, errors: s.problems.render((v) => hidden.has(v)) };
}

/** Validates a migration file, synchronously (the active-batch hook, if any, must be synchronous too). */
export function validateMigrationFileSync(file: Buffer, options: ValidateSyncOptions = {}): ValidationResult {
  const s = scan(file, options.maxProblems ?? DEFAULT_MAX_PROBLEMS);
  if (options.alreadyInActiveBatch && s.addresses.length > 0) markActive(s, options.alreadyInActiveBatch([...s.addresses]));
  return finish(s);
}

/** Validates a migration file; at batch creation, pass `alreadyInActiveBatch` (it may query the database). */
export async function validateMigrationFile(file: Buffer, options: ValidateOptions = {}): Promise<ValidationResult> {
  const s = scan(file, options.maxProblems ?? DEFAULT_MAX_PROBLEMS);
  if (options.alreadyInActiveBatch && s.addresses.length > 0) markActive(s, await options.alreadyInActiveBatch([...s.addresses]));
  return finish(s);
}
