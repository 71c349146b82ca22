/**
 * One admin credential shared by many rows (SPEC §2: `alice*admin`, `CORP/admin/alice`,
 * the target's admin acting as every address). Tried for each row, a wrong admin password
 * is one refused login per row: 500 in a row, which a source with a lockout policy
 * answers by locking the admin account, for the whole migration.
 *
 * So the rows of one credential are tried one at a time until a login works (the
 * credential is then known to be good, and the rest go at full speed), and no more are
 * tried once three in a row were refused: those are reported as not tried, with the
 * lines that were refused. Three, not one: a row may be refused for its own reason (the
 * user does not exist), which says nothing about the admin.
 */
import type { SideCheck } from './check-logins.js';

export const REFUSALS_BEFORE_GIVING_UP = 3;

export class AdminGate {
  private queue: Promise<void> = Promise.resolve();
  private works = false;
  private readonly refusedLines: number[] = [];

  constructor(private readonly what: string) {}

  /**
   * Runs `tryIt` for the row on `line` under the rules above. It says what the attempt
   * proved of the credential: `accepted` (the login worked, or was refused only for acting
   * as that user: RFC 5530 AUTHORIZATIONFAILED), `refused`, or nothing (a lost connection).
   */
  async attempt(line: number, tryIt: () => Promise<{ check: SideCheck; credential: 'accepted' | 'refused' | 'unknown' }>): Promise<SideCheck> {
    if (this.works) return (await tryIt()).check;
    let release!: () => void;
    const turn = new Promise<void>((resolve) => (release = resolve));
    const before = this.queue;
    this.queue = before.then(() => turn);
    await before;
    try {
      if (this.works) {
        release();
        return (await tryIt()).check;
      }
      if (this.refusedLines.length >= REFUSALS_BEFORE_GIVING_UP) {
        return {
          ok: false,
          error:
            `not tried: ${this.what} was refused for lines ${this.refusedLines.join(', ')} and has worked for no row yet; ` +
            'trying it for every row could lock the admin account out. Check that password, then run check-logins again',
        };
      }
      const { check, credential } = await tryIt();
      if (credential === 'accepted') this.works = true;
      else if (credential === 'refused') this.refusedLines.push(line);
      return check;
    } finally {
      release();
    }
  }
}
