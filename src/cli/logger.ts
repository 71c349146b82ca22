/** The CLI's logger: pino to stderr, with password fields redacted as a second guard. */
import { pino, type Logger } from 'pino';
import { UsageError } from './exit-codes.js';

const LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'];

export function cliLogger(level: string): Logger {
  // A usage error (exit 2) in our words, not pino's "default level:… must be included in custom levels".
  if (!LEVELS.includes(level)) throw new UsageError(`--log-level must be one of ${LEVELS.join(', ')}, not "${level}"`);
  return pino(
    {
      level,
      redact: { paths: ['password', '*.password', '*.*.password', 'pass', '*.pass'], censor: '[redacted]' },
    },
    pino.destination(2),
  );
}
