/**
 * Throwaway GNU Mailutils `imap4d` servers for tests, shaped like `startDovecot`
 * (dovecot.ts). Debian's `mailutils-imap4d` installs beside dovecot-imapd (no conflict).
 *
 * Why this server: it is the mbox store of the lab, and it has the quirks of one. Every
 * folder is an mbox file (a folder that holds mail cannot have subfolders); it serves its
 * bookkeeping header fields (`X-IMAPbase`, `X-UID`, `Status`) as part of each message and
 * writes an empty field back with a trailing space; an empty folder takes a new UIDVALIDITY
 * each time it is opened, until a message is stored; STATUS echoes folder names unquoted
 * (`* STATUS Sent Items (…)`); no UIDPLUS, CONDSTORE, SPECIAL-USE, MULTIAPPEND or keywords.
 *
 * Accounts come from a `virtdomain` passwd file (`user@lab.example` logs in), with the
 * lab's mail account as their uid; `authorization virtdomain:system` because imap4d looks
 * the storing process's own uid up when it writes a message. INBOX is `$home/INBOX`.
 */
import { spawnSync } from 'node:child_process';
import { chownSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import type { LabUser } from './dovecot.js';
import { checkLabAccounts, makeServerDir } from './cyrus.js';
import { LAB_HOST, LabServerUnavailable, type LabServerHandle, labAccount, serverHandle, startWrapped } from './server-process.js';

const IMAP4D = '/usr/sbin/imap4d';
const PORT_ATTEMPTS = 5;
/** Accounts log in as `user@LAB_DOMAIN` (virtdomain needs a domain). */
export const LAB_DOMAIN = 'lab.example';

export interface MailutilsOptions {
  /** Used in the temp dir name, e.g. 'target'. [A-Za-z0-9_-]+ */
  name: string;
  users: LabUser[];
}

export interface MailutilsServer extends LabServerHandle {
  name: string;
  separator: '/';
  /** The login of a lab user: `alice@lab.example`. */
  login(user: string): string;
  logPath: string;
}

/** Why imap4d cannot run here, or null. */
export function mailutilsUnavailableReason(): string | null {
  const r = spawnSync(IMAP4D, ['--version'], { encoding: 'utf8' });
  return r.status === 0 ? null : `GNU Mailutils imap4d is not installed (apt-get install mailutils-imap4d)`;
}

/** A crypt(3) SHA-512 hash of `password`, as a passwd file holds it. */
function cryptHash(password: string): string {
  const r = spawnSync('openssl', ['passwd', '-6', '-stdin'], { input: password, encoding: 'utf8' });
  if (r.status !== 0) throw new LabServerUnavailable(`lab: openssl passwd failed: ${r.stderr}`);
  return r.stdout.trim();
}

export async function startMailutils(opts: MailutilsOptions): Promise<MailutilsServer> {
  const unavailable = mailutilsUnavailableReason();
  if (unavailable) throw new LabServerUnavailable(`lab: ${unavailable}`);
  const { all } = checkLabAccounts(opts);
  const acct = labAccount();
  const dir = makeServerDir('mailutils', opts.name);
  try {
    const home = (u: string) => path.join(dir, 'home', u);
    mkdirSync(path.join(dir, 'vd'), { mode: 0o700 });
    mkdirSync(path.join(dir, 'home'), { mode: 0o711 });
    for (const u of all) {
      mkdirSync(home(u.username), { mode: 0o700 });
      writeFileSync(path.join(home(u.username), 'INBOX'), '', { mode: 0o600 });
      chownSync(home(u.username), acct.uid, acct.gid);
      chownSync(path.join(home(u.username), 'INBOX'), acct.uid, acct.gid);
    }
    writeFileSync(path.join(dir, 'vd', LAB_DOMAIN), all.map((u) => `${u.username}:${cryptHash(u.password)}:${acct.uid}:${acct.gid}::${home(u.username)}:/bin/false\n`).join(''), { mode: 0o600 });
    const { run, port } = await startWrapped({
      what: 'imap4d',
      name: opts.name,
      dir,
      attempts: PORT_ATTEMPTS,
      prepare: (port) => {
        writeFileSync(
          path.join(dir, 'imap4d.conf'),
          [
            'mode daemon;',
            'foreground yes;',
            `pidfile ${path.join(dir, 'imap4d.pid')};`,
            'logging { syslog no; };',
            'tls-mode false;',
            `server ${LAB_HOST}:${port} { tls-mode false; };`,
            'auth { authentication generic; authorization virtdomain:system; };',
            `virtdomain { passwd-dir ${path.join(dir, 'vd')}; };`,
            'namespace personal { prefix "" { directory "$home"; delimiter "/"; }; };',
            '',
          ].join('\n'),
        );
        return { command: [IMAP4D, `--config-file=${path.join(dir, 'imap4d.conf')}`, '--no-site-config'], env: { PATH: '/usr/sbin:/usr/bin:/sbin:/bin' } };
      },
      // imap4d's greeting is a bare `* OK IMAP4rev1`: nothing tells it from another server's.
      ours: (g) => g.trim() === '* OK IMAP4rev1',
      retryOn: /Address already in use|nothing answered/i,
    });
    return {
      ...serverHandle(run, port),
      name: opts.name,
      separator: '/',
      login: (user) => `${user}@${LAB_DOMAIN}`,
      logPath: path.join(dir, 'startup.log'),
    };
  } catch (err) {
    if (!process.env.MAILFERRY_LAB_KEEP) rmSync(dir, { recursive: true, force: true });
    throw err;
  }
}
