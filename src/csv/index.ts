/** Migration file (CSV) validation, SPEC §1. */
export { CHECK_NAMES, type CheckName, type MigrationRow, type Problem, type ValidateOptions, type ValidateSyncOptions, type ValidationResult } from './types.js';
export { DEFAULT_MAX_PROBLEMS, MAX_DATA_ROWS, MAX_FILE_BYTES, MAX_RECORD_CHARS } from './limits.js';
export { OPTIONAL_COLUMNS, REQUIRED_COLUMNS } from './columns.js';
export { fileTooLarge, validateMigrationFile, validateMigrationFileSync } from './validate.js';
