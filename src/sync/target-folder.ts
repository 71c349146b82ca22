/**
 * What the engine tracks about one target folder during a run. Several source folders may
 * feed one target folder (e.g. `Sent` and `Sent Items`), so this is shared by target path.
 */
export class TargetFolder {
  /**
   * A lower bound of the UID the target will give the next APPEND: UIDs are assigned in
   * strictly ascending order (RFC 3501 §2.3.1.1), so it is at least the UIDNEXT seen before
   * and above every UID an APPENDUID (RFC 4315 §3) returned. Journaled with each pending
   * message, it bounds what crash recovery has to inspect.
   */
  private uidFloor: number;

  /** UIDNEXT when the attempt began: every message at or above it was appended since (existing-copies.ts). */
  readonly uidNextAtStart: number;

  constructor(
    readonly path: string,
    readonly uidValidity: number,
    uidNext: number,
  ) {
    this.uidFloor = Math.max(1, uidNext);
    this.uidNextAtStart = this.uidFloor;
  }

  get floor(): number {
    return this.uidFloor;
  }

  noteAppended(uid: number): void {
    if (uid + 1 > this.uidFloor) this.uidFloor = uid + 1;
  }
}
