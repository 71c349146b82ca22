/**
 * What a server's CAPABILITY list (RFC 3501 §7.2.1) means for a migration: is it IMAP at
 * all, and which of the extensions that make mailferry fast or exact does it have.
 */

/** Extensions mailferry uses when present, with what each buys and what their absence costs. */
export const NOTABLE_EXTENSIONS: ReadonlyArray<{ name: string; rfc: string; use: string; without: string }> = [
  {
    name: 'LITERAL+',
    rfc: 'RFC 7888',
    use: 'messages are appended without waiting for the server between them (fast copying to a target)',
    without: 'every APPEND waits one round trip for the server (slower copying to a target over a distant link)',
  },
  {
    name: 'UIDPLUS',
    rfc: 'RFC 4315',
    use: 'each copied message gets its new UID at once (exact bookkeeping on a target)',
    without: 'copied messages on a target must be found again by searching (slower, less exact)',
  },
  {
    name: 'CONDSTORE',
    rfc: 'RFC 7162',
    use: 'incremental syncs fetch only the flags that changed',
    without: 'incremental syncs must list every flag of every message to find changes',
  },
  {
    name: 'SPECIAL-USE',
    rfc: 'RFC 6154',
    use: 'Sent, Drafts, Trash, Junk and Archive are recognised by their flags, not by name',
    without: 'special folders are recognised by their names only',
  },
  {
    name: 'LIST-STATUS',
    rfc: 'RFC 5819',
    use: 'all folder counters come in one command (cheap check of an unchanged mailbox)',
    without: 'each folder needs its own STATUS command',
  },
];

export interface CapabilityAssessment {
  /** IMAP4rev1 (RFC 3501) or IMAP4rev2 (RFC 9051) is announced. */
  imap: boolean;
  /** Notable extensions present / absent (names from {@link NOTABLE_EXTENSIONS}). */
  present: string[];
  absent: string[];
  /** SASL mechanisms offered (`AUTH=…`, RFC 3501 §6.2.2). */
  authMechanisms: string[];
  /** LOGIN refused on this connection (RFC 3501 §6.2.3, usually until TLS is on). */
  loginDisabled: boolean;
  /** One-line summary for a probe step. */
  summary: string;
  /** Things the admin should know, worded for a warning list. */
  warnings: string[];
}

/**
 * Judge a capability list. `afterLogin` says whether it was read in the authenticated
 * state: most servers (Dovecot, Exchange) announce their extensions only then, so a list
 * from before login is not held against the server.
 */
export function assessCapabilities(caps: ReadonlySet<string>, afterLogin: boolean): CapabilityAssessment {
  const imap = caps.has('IMAP4REV1') || caps.has('IMAP4REV2');
  // LITERAL- (RFC 7888 §4) gives the same pipelining for literals up to 4 KB.
  const has = (name: string) => caps.has(name) || (name === 'LITERAL+' && caps.has('LITERAL-'));
  const present = NOTABLE_EXTENSIONS.filter((e) => has(e.name)).map((e) => (e.name === 'LITERAL+' && !caps.has('LITERAL+') ? 'LITERAL-' : e.name));
  const absent = NOTABLE_EXTENSIONS.filter((e) => !has(e.name)).map((e) => e.name);
  const authMechanisms = [...caps].filter((c) => c.startsWith('AUTH=')).map((c) => c.slice(5));
  const loginDisabled = caps.has('LOGINDISABLED');
  const warnings: string[] = [];
  if (!imap) {
    warnings.push('the server announces neither IMAP4rev1 (RFC 3501) nor IMAP4rev2 (RFC 9051): it may not be a standard IMAP server');
  }
  if (afterLogin) {
    for (const e of NOTABLE_EXTENSIONS) if (!has(e.name)) warnings.push(`no ${e.name} (${e.rfc}): ${e.without}`);
  }
  const parts: string[] = [];
  parts.push(imap ? [caps.has('IMAP4REV2') ? 'IMAP4rev2' : '', caps.has('IMAP4REV1') ? 'IMAP4rev1' : ''].filter(Boolean).join(' + ') : 'no IMAP4rev1/IMAP4rev2');
  let ext = present.length ? `extensions that speed up or secure a migration: ${present.join(', ')}` : 'none of the extensions that speed up or secure a migration';
  if (present.length && absent.length) ext += `; not announced: ${absent.join(', ')}`;
  else if (!present.length) ext += ` (${absent.join(', ')})`;
  if (!afterLogin && absent.length) ext += ' (before login; most servers announce more after login)';
  parts.push(ext);
  if (authMechanisms.length) parts.push(`login methods: LOGIN${loginDisabled ? ' (disabled here)' : ''}, ${authMechanisms.map((m) => `AUTHENTICATE ${m}`).join(', ')}`);
  else if (loginDisabled) parts.push('LOGIN disabled on this connection');
  return { imap, present, absent, authMechanisms, loginDisabled, summary: parts.join('; '), warnings };
}
