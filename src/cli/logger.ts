/** The CLI's logger: pino to stderr, with password fields redacted as a second guard. */
import { pino, type Logger } from 'pino';

export function cliLogger(level: string): Logger {
  return pino(
    {
      level,
      redact: { paths: ['password', '*.password', '*.*.password', 'pass', '*.pass'], censor: '[redacted]' },
    },
    pino.destination(2),
  );
}
