/**
 * Decides where each source folder goes on the target.
 *
 * - Names are handled as lists of UTF-8 segments: imapflow decodes modified UTF-7
 *   (RFC 3501 §5.1.3) on the way in and encodes it on the way out, so translating between
 *   hierarchy separators is splitting on one and joining with the other.
 * - The personal namespace prefix (RFC 2342, e.g. Courier's `INBOX.`) is removed from
 *   source names and the target's is added, so `INBOX.Sent` becomes `Sent` on a server
 *   without a prefix. INBOX is always INBOX (RFC 3501 §5.1: case-insensitive).
 * - Special-use folders (RFC 6154: \Sent, \Drafts, \Trash, \Junk, \Archive; by the server's
 *   flags, else by well-known names) go to the target's folder of the same use, with their
 *   subfolders beneath it, so "Sent Items" lands in the target's "Sent".
 * - A segment that contains the target's separator cannot stay one segment there: the
 *   character is replaced by `_` (decision: visible and reversible by hand, like imapsync's
 *   default `--regextrans2` advice, rather than silently nesting the folder).
 * - Excluded folders are skipped with all their subfolders.
 */

export type SpecialUse = '\\Sent' | '\\Drafts' | '\\Trash' | '\\Junk' | '\\Archive';
const SPECIAL_USES: readonly SpecialUse[] = ['\\Sent', '\\Drafts', '\\Trash', '\\Junk', '\\Archive'];

/** The well-known aliases an admin may write instead of a folder name (SPEC §4). */
const ALIASES: Record<string, SpecialUse | 'INBOX'> = {
  '#inbox#': 'INBOX',
  '#sentitems#': '\\Sent',
  '#drafts#': '\\Drafts',
  '#deleteditems#': '\\Trash',
  '#junkemail#': '\\Junk',
  '#archive#': '\\Archive',
};

/** --include selects no folder of the mailbox: not retried within the run (the folders will not change by then). */
export class NothingSelectedError extends Error {
  override name = 'NothingSelectedError';
  readonly retryable = false;
}

/**
 * What is wrong with an --include/--exclude list, or null: an alias that is not one of
 * ALIASES (a typo such as `#Inbx#` would match no folder, and an include of it migrate
 * nothing), an empty name, or a folder both included and excluded.
 */
export function folderPatternProblem(include: readonly string[], exclude: readonly string[]): string | null {
  for (const [option, list] of [['--include', include], ['--exclude', exclude]] as const) {
    for (const p of list) {
      const t = p.trim();
      if (t === '') return `${option}: an empty folder name`;
      if (/^#.*#$/.test(t) && !(t.toLowerCase() in ALIASES)) return `${option} ${t}: no such folder alias; the aliases are ${Object.keys(ALIASES).map(aliasSpelling).join(' ')}`;
    }
  }
  const excluded = new Set(exclude.map((p) => p.trim().toLowerCase()));
  const both = include.find((p) => excluded.has(p.trim().toLowerCase()));
  return both === undefined ? null : `${both.trim()} is both included and excluded`;
}

/** `#sentitems#` as SPEC §4 writes it: `#SentItems#`. */
function aliasSpelling(key: string): string {
  return { '#inbox#': '#Inbox#', '#sentitems#': '#SentItems#', '#drafts#': '#Drafts#', '#deleteditems#': '#DeletedItems#', '#junkemail#': '#JunkEmail#', '#archive#': '#Archive#' }[key] ?? key;
}

export interface ServerFolder {
  /** Full path in UTF-8, with the server's separator. */
  path: string;
  delimiter: string | null;
  flags: ReadonlySet<string>;
  specialUse?: string | undefined;
}

export interface ServerView {
  folders: readonly ServerFolder[];
  /** Personal namespace prefix, e.g. '' or 'INBOX.'. */
  prefix: string;
  delimiter: string | null;
  /**
   * Prefixes of the "other users" namespaces (RFC 2342 §5), e.g. Dovecot's `users/`: other
   * people's mailboxes shared with this user. They are not this user's mail, so they are
   * not migrated (unless a UserRoot points into them). Shared/public namespaces are, as
   * SPEC §4 expects: the admin excludes them (e.g. Exchange public folders) per batch.
   */
  otherUsersPrefixes?: readonly string[];
}

export interface FolderMapping {
  sourcePath: string;
  targetPath: string;
  /** \Noselect folders are created (to keep the tree) but hold no messages. */
  selectable: boolean;
  specialUse?: SpecialUse;
  /** Whether the target already has this folder. */
  targetExists: boolean;
}

export interface MapOptions {
  exclude?: readonly string[];
  /** When set, only these folders (and their subfolders) are migrated. */
  include?: readonly string[];
  /**
   * Courier-style admin view: only folders under this path (segments separated by `/` or
   * the source separator, e.g. `/users/alberta`) are the user's; they map to the top of
   * the target mailbox, the root folder itself (or its INBOX child) to INBOX.
   */
  userRoot?: string;
  /**
   * Source folders already copied, with the target folder that holds their copies: they
   * stay mapped there whatever the target or the source gained since (a Thunderbird
   * `Archive` made on the target after the MX switch, a `Junk` made on the source that now
   * claims the junk folder by its name). Why: a mapping that changes between runs splits
   * a folder in two, and the journal's target UIDs are UIDs of the first target folder, so
   * flag changes sent to the new one would land on other messages.
   */
  established?: ReadonlyMap<string, string>;
}

function isInbox(segments: readonly string[]): boolean {
  return segments.length === 1 && segments[0]!.toUpperCase() === 'INBOX';
}

function splitPath(path: string, view: ServerView): string[] {
  if (path.toUpperCase() === 'INBOX') return ['INBOX'];
  let p = path;
  if (view.prefix && p.startsWith(view.prefix)) {
    p = p.slice(view.prefix.length);
    // Courier's `INBOX.INBOX` is a folder called INBOX inside the inbox (every personal
    // folder there is), not the inbox itself: merging it into INBOX would move a user's
    // filed mail into their inbox.
    if (p.toUpperCase() === 'INBOX') return ['INBOX', p];
  }
  const segs = view.delimiter ? p.split(view.delimiter) : [p];
  return segs.filter((s, i) => s !== '' || i === 0);
}

function joinPath(segments: readonly string[], view: ServerView): string {
  if (isInbox(segments)) return 'INBOX';
  const d = view.delimiter;
  // Under an `INBOX.` prefix (Courier, classic Cyrus) every folder is inside the inbox
  // already: a source's `INBOX/Receipts` is `INBOX.Receipts` there, not `INBOX.INBOX.Receipts`.
  const inboxPrefix = d !== null && view.prefix.toUpperCase() === `INBOX${d.toUpperCase()}`;
  if (inboxPrefix && segments.length > 1 && segments[0]!.toUpperCase() === 'INBOX') segments = segments.slice(1);
  const safe = d ? segments.map((s) => s.split(d).join('_')) : [segments.join('_')];
  // A prefix such as Courier's `INBOX.` is where personal folders must be created.
  return view.prefix + safe.join(d ?? '');
}

function specialUseOf(folder: ServerFolder): SpecialUse | undefined {
  return SPECIAL_USES.find((u) => u === folder.specialUse || folder.flags.has(u));
}

/** A folder that only shows messages kept in other folders (see mapFolders). */
export function isView(folder: Pick<ServerFolder, 'flags'>): boolean {
  return folder.flags.has('\\Flagged') || folder.flags.has('\\Important');
}

/** The special use the server itself flags the folder with (RFC 6154), not guessed from its name. */
function flaggedUse(folder: ServerFolder): SpecialUse | undefined {
  return SPECIAL_USES.find((u) => folder.flags.has(u));
}

function patternSegments(pattern: string, sourceDelimiter: string | null): string[] {
  const seps = new Set(['/', sourceDelimiter ?? '/']);
  let segs = [pattern.trim()];
  for (const sep of seps) segs = segs.flatMap((s) => s.split(sep));
  return segs.filter((s) => s !== '');
}

/**
 * A UserRoot as a mailbox name on the source (its segments joined with the source's
 * separator, e.g. `#shared.alberta` for `/#shared/alberta` on Courier), for listing it by
 * name; null when it names no folder. The same segments mapFolders matches.
 */
export function userRootPattern(userRoot: string, sourceDelimiter: string | null): string | null {
  const segs = patternSegments(userRoot, sourceDelimiter);
  if (segs.length === 0) return null;
  if (!sourceDelimiter) return segs.length === 1 ? segs[0]! : null;
  return segs.join(sourceDelimiter);
}

function startsWithSegments(path: readonly string[], prefix: readonly string[]): boolean {
  if (prefix.length === 0 || prefix.length > path.length) return false;
  return prefix.every((seg, i) => seg.toLowerCase() === path[i]!.toLowerCase());
}

/** Source folders with a special use that claim it: the first flagged by the server, else the first found by name. */
function claimSpecialUses(folders: readonly { folder: ServerFolder; segs: string[] }[]): Map<SpecialUse, string[]> {
  const claims = new Map<SpecialUse, string[]>();
  const ordered = [...folders].sort((a, b) => Number(b.folder.flags.has(specialUseOf(b.folder) ?? '')) - Number(a.folder.flags.has(specialUseOf(a.folder) ?? '')));
  for (const { folder, segs } of ordered) {
    const use = specialUseOf(folder);
    if (use && !claims.has(use)) claims.set(use, segs);
  }
  return claims;
}

/**
 * `--exclude`/`--include` patterns no source folder answers to (a typo, or `Junk` for a
 * source whose folder is `Junk E-mail`): said, since such a pattern silently does nothing.
 */
export function patternsMatchingNothing(source: ServerView, opts: MapOptions): string[] {
  const candidates = sourceCandidates(source, opts);
  const matches = matcher(source, candidates);
  return [...(opts.exclude ?? []), ...(opts.include ?? [])].filter((p) => !candidates.some(({ folder, segs }) => matches(segs, folder, [p])));
}

type Candidate = { folder: ServerFolder; segs: string[] };

/** The source folders a mapping starts from, with their path segments (under UserRoot, below it). */
function sourceCandidates(source: ServerView, opts: MapOptions): Candidate[] {
  const root = opts.userRoot ? patternSegments(opts.userRoot, source.delimiter) : null;
  const candidates: Candidate[] = [];
  const otherUsers = root ? [] : (source.otherUsersPrefixes ?? []);
  for (const folder of source.folders) {
    if (folder.flags.has('\\NonExistent')) continue;
    if (otherUsers.some((p) => folder.path.startsWith(p) || `${folder.path}${source.delimiter ?? ''}` === p)) continue;
    let segs = splitPath(folder.path, source);
    if (root) {
      // Under UserRoot the namespace prefix is part of the written root, so match the full path.
      const full = source.delimiter ? folder.path.split(source.delimiter).filter((s) => s !== '') : [folder.path];
      if (!startsWithSegments(full, root) && !(full.length === root.length && full.every((s, i) => s.toLowerCase() === root[i]!.toLowerCase()))) continue;
      segs = full.slice(root.length);
      if (segs.length === 0 || (segs.length === 1 && segs[0]!.toUpperCase() === 'INBOX')) segs = ['INBOX'];
    }
    candidates.push({ folder, segs });
  }
  return candidates;
}

/** Whether a folder answers to one of the patterns (a path and its subfolders, or an alias like `#SentItems#`). */
function matcher(source: ServerView, candidates: readonly Candidate[]): (segs: string[], folder: ServerFolder, patterns: readonly string[]) => boolean {
  return (segs, folder, patterns) =>
    patterns.some((pattern) => {
      const alias = ALIASES[pattern.trim().toLowerCase()];
      if (alias === 'INBOX') return isInbox(segs) || startsWithSegments(segs, ['INBOX']);
      if (alias) return specialUseOf(folder) === alias || candidates.some((c) => specialUseOf(c.folder) === alias && startsWithSegments(segs, c.segs));
      if (startsWithSegments(segs, patternSegments(pattern, source.delimiter))) return true;
      // The name as the server lists it, personal prefix included (`INBOX.Sent Items` on
      // Courier or classic Cyrus, as imapsync users write it), names the same folder.
      const p = pattern.trim();
      const prefix = source.prefix;
      return prefix !== '' && p.length > prefix.length && p.slice(0, prefix.length).toUpperCase() === prefix.toUpperCase() && startsWithSegments(segs, splitPath(prefix + p.slice(prefix.length), source));
    });
}

/**
 * Builds the folder plan. Pure: the caller lists both servers and creates what is missing.
 */
export function mapFolders(source: ServerView, target: ServerView, opts: MapOptions = {}): FolderMapping[] {
  const candidates = sourceCandidates(source, opts);
  const matches = matcher(source, candidates);
  const kept = candidates.filter(({ folder, segs }) => {
    if (opts.exclude?.length && matches(segs, folder, opts.exclude)) return false;
    if (opts.include?.length && !matches(segs, folder, opts.include)) return false;
    // Views of mail filed elsewhere (RFC 6154 §2 \Flagged, Gmail's `[Gmail]/Starred`, and
    // Gmail's \Important): copied, every flagged message would be on the target twice.
    // Taken only when an include names them.
    if (isView(folder) && !(opts.include?.length && matches(segs, folder, opts.include))) return false;
    return true;
  });

  const sourceClaims = claimSpecialUses(kept);
  // A target folder that only matches a special use by its name, and has the very name a
  // source folder is copied to, is not a special-use destination: it may be the copy of
  // that source folder. Why: with `Sent Items` (\Sent) and a plain `Sent` on the source and
  // no special-use folders on the target, the first run creates `Sent` for the plain one;
  // counting it as the target's Sent on the next run would send new `Sent Items` mail
  // there while the old stays in `Sent Items`, and the mapping would differ from run to run.
  // Folders the target flags (RFC 6154) are its own, whatever their names.
  const copiedTo = new Set(kept.map(({ segs }) => joinPath(segs, target)));
  const targetClaims = claimSpecialUses(
    target.folders
      .filter((folder) => flaggedUse(folder) !== undefined || !copiedTo.has(folder.path.toUpperCase() === 'INBOX' ? 'INBOX' : folder.path))
      .map((folder) => ({ folder, segs: splitPath(folder.path, target) })),
  );
  const targetPaths = new Set(target.folders.filter((f) => !f.flags.has('\\NonExistent')).map((f) => f.path.toUpperCase() === 'INBOX' ? 'INBOX' : f.path));

  const out: FolderMapping[] = [];
  const seenTargets = new Set<string>();
  for (const { folder, segs } of kept) {
    let targetSegs = segs;
    let specialUse: SpecialUse | undefined;
    for (const [use, claimSegs] of sourceClaims) {
      if (!startsWithSegments(segs, claimSegs)) continue;
      const dest = targetClaims.get(use);
      if (dest) targetSegs = [...dest, ...segs.slice(claimSegs.length)];
      if (segs.length === claimSegs.length) specialUse = use;
      break;
    }
    const targetPath = opts.established?.get(folder.path) ?? joinPath(targetSegs, target);
    // Two source folders may land on one target folder (e.g. `Sent` and `Sent Items`
    // both map to the target's Sent); that is intended, the messages are merged.
    seenTargets.add(targetPath);
    out.push({
      sourcePath: folder.path,
      targetPath,
      selectable: !folder.flags.has('\\Noselect'),
      ...(specialUse ? { specialUse } : {}),
      targetExists: targetPaths.has(targetPath),
    });
  }
  return out;
}
