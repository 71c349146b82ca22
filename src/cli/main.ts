#!/usr/bin/env node
/** The `mailferry` command. Each command returns its exit status (SPEC §8). */
import { Command, CommanderError } from 'commander';
import { CredentialFormatError, ImpersonationError, UserRootError } from '../auth/source-login.js';
import { ImapAuthError, ImapConnectError } from '../imap/errors.js';
import { StoreOpenError, StoreUrlError } from '../store/open.js';
import { TimeInputError } from '../batch/time-input.js';
import { EXIT, UsageError } from './exit-codes.js';
import { packageVersion } from './version.js';

type Run = (fn: () => Promise<number>) => Promise<void>;
type Register = (program: Command, run: Run) => void;

/**
 * Each group of commands, loaded only when asked for. Why: evaluating every command's
 * modules (the service's scheduler, HTTP API and report mailer, batch and CSV handling…)
 * cost every `mailferry sync` start-up time and CPU it never used; the bundle
 * (scripts/bundle.mjs) turns these dynamic imports into lazy initialisers, so only the
 * group named on the command line is evaluated (sync-command.ts still imports
 * batch/time-input.ts, a small module). Help and
 * unknown commands load them all, in this order (the order of the help text).
 */
const GROUPS: { commands: readonly string[]; load: () => Promise<Register> }[] = [
  { commands: ['sync', 'verify'], load: async () => (await import('./sync-command.js')).registerSyncCommands },
  { commands: ['endpoint', 'target'], load: async () => (await import('./endpoint-command.js')).registerEndpointCommands },
  { commands: ['csv'], load: async () => (await import('./csv-command.js')).registerCsvCommands },
  { commands: ['batch'], load: async () => (await import('./batch-command.js')).registerBatchCommands },
  { commands: ['dns'], load: async () => (await import('./dns-command.js')).registerDnsCommands },
  { commands: ['serve', 'worker'], load: async () => (await import('./serve-command.js')).registerServeCommands },
];

/** The command word: the first argument that is not an option (the program has none of its own but -h and -V). */
function commandWord(argv: readonly string[]): string | undefined {
  return argv.slice(2).find((a) => !a.startsWith('-'));
}

async function run(fn: () => Promise<number>): Promise<void> {
  try {
    process.exitCode = await fn();
  } catch (err) {
    const message = (err as Error)?.message ?? String(err);
    const status =
      err instanceof UsageError || err instanceof StoreUrlError || err instanceof TimeInputError || err instanceof CredentialFormatError
        ? EXIT.usage
        : err instanceof ImapAuthError || err instanceof ImapConnectError || err instanceof ImpersonationError || err instanceof UserRootError || err instanceof StoreOpenError
          ? EXIT.connect
          : EXIT.incomplete;
    process.stderr.write(`mailferry: ${message}\n`);
    // SPEC §8: with --json the last line of stdout is one JSON object, also when the
    // command failed, so a script driving mailferry never has to parse stderr. Error
    // messages never hold a password (they name servers and users only).
    const partial = (err as { partial?: Record<string, number> } | undefined)?.partial;
    if (process.argv.includes('--json')) process.stdout.write(JSON.stringify({ error: message, exitStatus: status, ...(partial ?? {}) }) + '\n');
    process.exitCode = status;
  }
}

const program = new Command();
program
  .name('mailferry')
  .description('Migrate whole mailboxes between IMAP servers, exactly once, and keep them in sync until the cut-over.')
  .version(packageVersion(), '-V, --version', 'print the version and exit')
  .exitOverride()
  .showHelpAfterError();
/** No top-level await: the bundle is a classic script (scripts/bundle.mjs, for V8's code cache). */
async function main(): Promise<void> {
  const word = commandWord(process.argv);
  const named = GROUPS.find((g) => word !== undefined && g.commands.includes(word));
  for (const g of named ? [named] : GROUPS) (await g.load())(program, run);
  try {
    await program.parseAsync(process.argv);
  } catch (err) {
    if (err instanceof CommanderError) {
      process.exitCode = err.exitCode === 0 ? 0 : EXIT.usage;
      // Commander has printed the error; with --json the last stdout line is still the JSON object (SPEC §8).
      if (err.exitCode !== 0 && process.argv.includes('--json')) process.stdout.write(JSON.stringify({ error: err.message.replace(/^error: /, ''), exitStatus: EXIT.usage }) + '\n');
    } else {
      throw err;
    }
  }
}

// As a top-level await would: anything else that escapes is an uncaught exception.
main().catch((err: unknown) => {
  process.nextTick(() => {
    throw err;
  });
});
