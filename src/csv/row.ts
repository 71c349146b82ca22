/** A valid row, made so that logging or serialising it cannot leak its password. */
import { inspect } from 'node:util';
import type { MigrationRow } from './types.js';

/**
 * A plain data object whose JSON (pino, API responses) and console.log/util.inspect form show the
 * password as "(hidden)": storing it is an explicit act (encrypted, SPEC §1), never a side effect.
 * A class rather than hidden properties defined on each object: those turned every row into a
 * slow dictionary-mode object and showed up high in the profile of a 50,000-row validation.
 */
export class ValidRow implements MigrationRow {
  // `declare`: a class field would define `userRoot: undefined` on every row without one.
  declare userRoot?: string;

  constructor(
    readonly line: number,
    readonly emailAddress: string,
    readonly userName: string,
    readonly password: string,
    userRoot: string | undefined,
  ) {
    if (userRoot) this.userRoot = userRoot;
  }

  toJSON(): object {
    return { ...this, password: '(hidden)' };
  }

  [inspect.custom](_depth: number, options: object): string {
    return inspect({ ...this, password: '(hidden)' }, options);
  }
}
