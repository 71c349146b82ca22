#!/usr/bin/env node
/** The `mailferry` command. Each command returns its exit status (SPEC §8). */
import { Command, CommanderError } from 'commander';
import { CredentialFormatError, ImpersonationError, UserRootError } from '../auth/source-login.js';
import { ImapAuthError, ImapConnectError } from '../imap/errors.js';
import { StoreUrlError } from '../store/open.js';
import { EXIT, UsageError } from './exit-codes.js';
import { registerCsvCommands } from './csv-command.js';
import { registerEndpointCommands } from './endpoint-command.js';
import { registerBatchCommands } from './batch-command.js';
import { registerServeCommands } from './serve-command.js';
import { registerSyncCommands } from './sync-command.js';

async function run(fn: () => Promise<number>): Promise<void> {
  try {
    process.exitCode = await fn();
  } catch (err) {
    if (err instanceof UsageError || err instanceof StoreUrlError || err instanceof CredentialFormatError) {
      process.stderr.write(`mailferry: ${err.message}\n`);
      process.exitCode = EXIT.usage;
    } else if (err instanceof ImapAuthError || err instanceof ImapConnectError || err instanceof ImpersonationError || err instanceof UserRootError) {
      process.stderr.write(`mailferry: ${err.message}\n`);
      process.exitCode = EXIT.connect;
    } else {
      process.stderr.write(`mailferry: ${(err as Error)?.message ?? String(err)}\n`);
      process.exitCode = EXIT.incomplete;
    }
  }
}

const program = new Command();
program
  .name('mailferry')
  .description('Migrate whole mailboxes between IMAP servers, exactly once, and keep them in sync until the cut-over.')
  .exitOverride()
  .showHelpAfterError();
registerSyncCommands(program, run);
registerEndpointCommands(program, run);
registerCsvCommands(program, run);
registerBatchCommands(program, run);
registerServeCommands(program, run);

try {
  await program.parseAsync(process.argv);
} catch (err) {
  if (err instanceof CommanderError) {
    process.exitCode = err.exitCode === 0 ? 0 : EXIT.usage;
  } else {
    throw err;
  }
}
