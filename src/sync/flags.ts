/** Message flags as the journal stores them: a canonical string, and diffs between two. */

import { isSendableFlag } from '../imap/append-pipeline.js';

/** \Recent is session state the client cannot set (RFC 3501 §2.3.2); never copied. */
const UNSETTABLE = new Set(['\\RECENT']);

/**
 * The flags to copy, canonical. A keyword that is not an IMAP atom (RFC 3501 §9: no 8-bit,
 * no `]`, `%`, `*`…), which some servers store anyway (Dovecot lists what another program
 * wrote into its keywords file), cannot be written in any APPEND or STORE: it is left out
 * (see {@link unsendableFlags}) rather than failing the message or the whole mailbox.
 */
export function normalizeFlags(flags: Iterable<string> | undefined): string[] {
  if (!flags) return [];
  const out = new Set<string>();
  for (const f of flags) if (f && !UNSETTABLE.has(f.toUpperCase()) && isSendableFlag(f)) out.add(f);
  return [...out].sort();
}

/** The flags normalizeFlags leaves out because no IMAP command can carry them. */
export function unsendableFlags(flags: Iterable<string> | undefined): string[] {
  return flags ? [...flags].filter((f) => f && !isSendableFlag(f)) : [];
}

/**
 * The journal's flags of a copy whose flags on the target are not known: a run recorded it
 * before sending a flag change (from `before` to `after`), and was stopped before
 * recording the change as done. Written `%before%after`: `%` is an atom-special (RFC 3501
 * §9), so no flag holds it and normalizeFlags never journals one. The next run reads the
 * target's flags of such a copy instead of trusting the journal, and takes as the copy's
 * mirrored flags those of the target's that either side of the change explains (a flag a
 * user set on the target stays theirs).
 */
export function uncertainFlags(before: string, after: string): string {
  return `%${before}%${after}`;
}

export function isUncertain(flags: string): boolean {
  return flags.startsWith('%');
}

/** A copy's flags on the target, as far as the interrupted change explains them (see uncertainFlags). */
export function settleUncertain(journaled: string, onTarget: string): string {
  const [, before = '', after = ''] = journaled.split('%');
  const explained = new Set([...parseFlagsKey(before), ...parseFlagsKey(after)].map((f) => f.toLowerCase()));
  return parseFlagsKey(onTarget)
    .filter((f) => explained.has(f.toLowerCase()))
    .join(' ');
}

export function flagsKey(flags: Iterable<string> | undefined): string {
  return normalizeFlags(flags).join(' ');
}

export function parseFlagsKey(key: string): string[] {
  return key === '' ? [] : key.split(' ');
}

export interface FlagDiff {
  add: string[];
  remove: string[];
}

/** What to add and remove on the target so that a change on the source is mirrored, and
 * flags changed only on the target (by users after the MX switch) are left alone. */
export function diffFlags(before: string, after: string): FlagDiff | null {
  const a = new Set(parseFlagsKey(before).map((f) => f.toLowerCase()));
  const b = new Set(parseFlagsKey(after).map((f) => f.toLowerCase()));
  const add = parseFlagsKey(after).filter((f) => !a.has(f.toLowerCase()));
  const remove = parseFlagsKey(before).filter((f) => !b.has(f.toLowerCase()));
  return add.length || remove.length ? { add, remove } : null;
}
