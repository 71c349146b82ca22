/**
 * Throwaway real Courier IMAP servers for tests, shaped like `startDovecot` (dovecot.ts).
 *
 * Courier's Debian packages conflict with dovecot-imapd, so scripts/lab-servers.sh unpacks
 * them into `.lab/root` (see cyrus.ts). Courier has its paths compiled in — authlib
 * loads its modules from /usr/lib/courier-authlib, reads /etc/courier/authdaemonrc and
 * /etc/courier/userdb.dat, and talks to authdaemond over /run/courier/authdaemon/socket —
 * so each server runs in a private mount and PID namespace (`unshare`, which needs root):
 * `.lab/root/usr` and `.lab/root/etc` are overlaid on /usr and /etc (read-only overlays:
 * the host's files stay as they are and others never see the packages), the server's own
 * config dir is bound over /etc/courier and a tmpfs over /run. The daemons are
 * `authdaemond` (module `authuserdb`, users made with `makeuserdb` from a userdb file) and
 * `couriertcpd` → `imaplogin` → `imapd` on a free loopback port; mail is Maildir++ in the
 * temp dir, owned by `nobody` (or MAILFERRY_LAB_MAIL_USER). When the namespace's first
 * process dies every process in it dies with it (the kernel kills a PID namespace with
 * its init), so nothing outlives the server; the wrapper of server-process.ts stops it
 * (SIGKILL to `unshare`) when `stop()` is called or this process dies, and removes the
 * temp dir.
 *
 * Namespaces as Courier serves them: personal `INBOX.` with separator '.', no SPECIAL-USE,
 * CONDSTORE or LITERAL+. `admins` get the account option `group=administrators`, which
 * Courier's default ACLs give full rights on every folder; with the shared index file
 * (IMAP_SHAREDINDEXFILE) listing every account, an admin sees each user's folders as
 * Courier's virtual shared folders, `#shared.<user>` (the user's INBOX) and
 * `#shared.<user>.<folder>` — the admin view SPEC §2's UserRoot is for.
 *
 * IMAP_EMPTYTRASH (Debian's default purges Trash messages older than 7 days at every
 * logout) is off, so a lab mailbox only changes when a test changes it.
 */
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chownSync, existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import type { LabUser } from './dovecot.js';
import { checkLabAccounts, imapQuote, imapScript, isExecutable, labPackageRoot, libraryPath, makeServerDir } from './cyrus.js';
import { LAB_HOST, LabServerUnavailable, type LabServerHandle, labAccount, serverHandle, setUpOrStop, startWrapped } from './server-process.js';

export interface CourierOptions {
  /** Used in the temp dir name, e.g. 'source'. [A-Za-z0-9_-]+ */
  name: string;
  /** Accounts with a Maildir (userdb). */
  users: LabUser[];
  /**
   * Accounts with `group=administrators`: full rights on every user's folders, which they
   * see as `#shared.<user>…`. They have an (empty) mailbox of their own.
   */
  admins?: LabUser[];
  /** Folders (segments under INBOX, e.g. ['Sent']) created in every user's mailbox. */
  folders?: string[][];
  /** Extra imapd environment (Courier's /etc/courier/imapd settings), e.g. { IMAP_KEYWORDS: '0' }. */
  imapdEnv?: Record<string, string>;
}

export interface CourierServer extends LabServerHandle {
  name: string;
  separator: '.';
  /** Personal namespace prefix: 'INBOX.'. */
  prefix: 'INBOX.';
  /** Where an admin sees a user's mailbox (the user's INBOX): '#shared.alice'. */
  sharedRoot(user: string): string;
  users: LabUser[];
  admins: LabUser[];
  /** imapd's and authdaemond's log (DEBUG_LOGIN=1: logins are logged, passwords are not). */
  logPath: string;
}

interface CourierInstall {
  root: string;
}

const MARKERS = ['usr/sbin/couriertcpd', 'usr/lib/courier/courier/imaplogin', 'usr/bin/imapd', 'usr/lib/courier/courier-authlib/authdaemond', 'usr/sbin/makeuserdb', 'usr/lib/courier-authlib/libauthuserdb.so'];

function findCourier(): CourierInstall | string {
  const root = labPackageRoot();
  if (!root || !MARKERS.every((m) => existsSync(path.join(root, m)))) {
    return 'Courier IMAP is not available: run `bash scripts/lab-servers.sh` (unpacks courier-imap into .lab/root; needs apt-get download) or set MAILFERRY_LAB_ROOT';
  }
  return { root };
}

const PORT_ATTEMPTS = 3;

let namespaceVerdict: string | null | undefined;

/** Null when startCourier can work here, else the reason it cannot (for a test's skip message). */
export function courierUnavailableReason(): string | null {
  const inst = findCourier();
  if (typeof inst === 'string') return inst;
  if (process.getuid?.() !== 0) return 'Courier IMAP has its paths compiled in; the lab overlays them in a private mount namespace, which needs root';
  try {
    labAccount();
  } catch (err) {
    return (err as Error).message;
  }
  if (namespaceVerdict === undefined) {
    let filesystems = '';
    try {
      filesystems = readFileSync('/proc/filesystems', 'utf8');
    } catch {
      // judged by the probe below
    }
    if (!isExecutable('/usr/bin/unshare') && !isExecutable('/bin/unshare')) namespaceVerdict = 'unshare (util-linux) is not installed';
    else if (filesystems && !/\toverlay$/m.test(filesystems)) namespaceVerdict = 'the kernel has no overlay filesystem';
    else {
      // The real thing, in miniature: can we make namespaces and mount an overlay?
      const r = spawnSync('unshare', ['--mount', '--propagation', 'private', '--pid', '--fork', 'sh', '-c', 'mount -t tmpfs tmpfs /mnt && mkdir /mnt/a /mnt/b && mount -t overlay overlay -o lowerdir=/mnt/a:/mnt/b /mnt/b'], { encoding: 'utf8', timeout: 10_000 });
      namespaceVerdict = r.status === 0 ? null : `cannot create a private mount namespace with an overlay mount here (${(r.stderr || r.error?.message || `exit ${r.status}`).trim()})`;
    }
  }
  return namespaceVerdict;
}

/** userdb's `systempw`: authlib checks `{SHA256}` + base64 of the SHA-256 itself. */
function hashPassword(pw: string): string {
  return `{SHA256}${createHash('sha256').update(pw, 'utf8').digest('base64')}`;
}

/*
 * Runs inside the namespaces as their first process. $1 = lab root, $2 = server dir,
 * $3 = port. Overlays the packages on /usr and /etc, binds our config over /etc/courier,
 * builds userdb.dat, starts authdaemond, waits for its socket, then becomes couriertcpd.
 */
const INSIDE = `
set -e
L=$1; D=$2; PORT=$3
mount -t overlay overlay -o "lowerdir=$L/usr:/usr" /usr
mount -t overlay overlay -o "lowerdir=$L/etc:/etc" /etc
mount --bind "$D/etc" /etc/courier
mount -t tmpfs -o mode=755 tmpfs /run
mkdir -p /run/courier/authdaemon
/usr/sbin/makeuserdb
/usr/lib/courier/courier-authlib/authdaemond >>"$D/courier.log" 2>&1 &
i=0
while [ ! -S /run/courier/authdaemon/socket ]; do
  i=$((i+1)); [ $i -gt 200 ] && { echo "authdaemond did not create its socket" >&2; exit 1; }
  sleep 0.025
done
set -a
. "$D/imapd.env"
set +a
exec /usr/sbin/couriertcpd -address=${LAB_HOST} -maxprocs=40 -maxperip=40 -nodnslookup -noidentlookup "-stderr=$D/courier.log" "$PORT" /usr/lib/courier/courier/imaplogin /usr/bin/imapd Maildir
`;

export async function startCourier(opts: CourierOptions): Promise<CourierServer> {
  const unavailable = courierUnavailableReason();
  if (unavailable) throw new LabServerUnavailable(`lab: ${unavailable}`);
  const inst = findCourier() as CourierInstall;
  const { admins, all } = checkLabAccounts(opts);
  for (const [k, v] of Object.entries(opts.imapdEnv ?? {})) {
    if (!/^[A-Z_][A-Z0-9_]*$/.test(k) || /['\n\r]/.test(v)) throw new Error(`lab: bad imapd setting ${k}`);
  }
  for (const f of opts.folders ?? []) {
    if (f.length === 0 || f.some((s) => !/^[\x20-\x7e]+$/.test(s) || /[."\\]/.test(s))) throw new Error(`lab: folder names must be printable ASCII without '.', '"' or '\\': ${JSON.stringify(f)}`);
  }
  const acct = labAccount();

  const dir = makeServerDir('courier', opts.name);
  try {
    const etc = path.join(dir, 'etc');
    mkdirSync(path.join(etc, 'shared'), { recursive: true, mode: 0o755 });
    const home = (u: string) => path.join(dir, 'home', u);
    mkdirSync(path.join(dir, 'home'), { mode: 0o711 });
    for (const u of all) {
      for (const sub of ['', 'Maildir', 'Maildir/cur', 'Maildir/new', 'Maildir/tmp']) {
        const p = path.join(home(u.username), sub);
        mkdirSync(p, { mode: 0o700 });
        chownSync(p, acct.uid, acct.gid);
      }
    }
    const isAdmin = new Set(admins.map((a) => a.username));
    // userdb: `name<TAB>field=value|…`; makeuserdb turns it into userdb.dat inside the namespace.
    writeFileSync(
      path.join(etc, 'userdb'),
      all
        .map((u) => {
          const fields = [`uid=${acct.uid}`, `gid=${acct.gid}`, `home=${home(u.username)}`, `mail=${home(u.username)}/Maildir`, `systempw=${hashPassword(u.password)}`];
          if (isAdmin.has(u.username)) fields.push('options=group=administrators');
          return `${u.username}\t${fields.join('|')}\n`;
        })
        .join(''),
      { mode: 0o600 },
    );
    writeFileSync(path.join(etc, 'authdaemonrc'), ['authmodulelist="authuserdb"', 'authmodulelistorig="authuserdb"', 'daemons=2', 'authdaemonvar=/run/courier/authdaemon', 'DEBUG_LOGIN=1', 'DEFAULTOPTIONS=""', 'LOGGEROPTS=""', ''].join('\n'), { mode: 0o644 });
    // Virtual shared folders: name, uid, gid, home, maildir (README.sharedfolders).
    writeFileSync(path.join(etc, 'shared', 'index'), all.map((u) => `${u.username}\t${acct.uid}\t${acct.gid}\t${home(u.username)}\tMaildir\n`).join(''), { mode: 0o644 });
    const env: Record<string, string> = {
      // Debian's /etc/courier/imapd, minus IDLE (gamin is there, but a test needs no IDLE).
      IMAP_CAPABILITY: 'IMAP4rev1 UIDPLUS CHILDREN NAMESPACE THREAD=ORDEREDSUBJECT THREAD=REFERENCES SORT QUOTA',
      IMAP_KEYWORDS: '1',
      IMAP_ACL: '1',
      IMAP_SHAREDINDEXFILE: path.join(etc, 'shared', 'index'),
      IMAP_TRASHFOLDERNAME: 'Trash',
      IMAP_EMPTYTRASH: '',
      IMAP_MOVE_EXPUNGE_TO_TRASH: '0',
      IMAP_USELOCKS: '1',
      IMAP_MAILBOX_SANITY_CHECK: '1',
      IMAP_UMASK: '022',
      IMAP_ULIMITD: '131072',
      IMAP_IDLE_TIMEOUT: '60',
      IMAP_ENHANCEDIDLE: '0',
      IMAP_DISABLETHREADSORT: '0',
      IMAP_CHECK_ALL_FOLDERS: '0',
      IMAP_OBSOLETE_CLIENT: '0',
      IMAP_PROXY: '0',
      MAILDIRPATH: 'Maildir',
      ...opts.imapdEnv,
    };
    writeFileSync(path.join(dir, 'imapd.env'), Object.entries(env).map(([k, v]) => `${k}='${v}'\n`).join(''), { mode: 0o644 });
    writeFileSync(path.join(dir, 'inside.sh'), INSIDE, { mode: 0o755 });

    const spawnEnv: NodeJS.ProcessEnv = {
      PATH: '/usr/sbin:/usr/bin:/sbin:/bin',
      // Libraries unpacked outside usr/ (e.g. lib/x86_64-linux-gnu) are not in the /usr overlay.
      LD_LIBRARY_PATH: libraryPath(inst.root),
      ...(process.env.MAILFERRY_LAB_KEEP ? { MAILFERRY_LAB_KEEP: '1' } : {}),
    };
    const { run, port } = await startWrapped({
      what: 'courier',
      name: opts.name,
      dir,
      attempts: PORT_ATTEMPTS,
      prepare: (port) => ({
        command: ['unshare', '--mount', '--propagation', 'private', '--pid', '--fork', '--kill-child', '--mount-proc', '/bin/sh', path.join(dir, 'inside.sh'), inst.root, dir, String(port)],
        env: spawnEnv,
        // unshare blocks SIGTERM while it waits; SIGKILL makes the kernel kill its child, the
        // namespace's init, and with it every process in the namespace.
        stopSignal: 'SIGKILL',
      }),
      ours: (g) => g.startsWith('* OK') && g.includes('Courier-IMAP'),
      logs: ['courier.log'],
      retryOn: /Address already in use|nothing answered/i,
    });
    const server: CourierServer = {
      ...serverHandle(run, port),
      name: opts.name,
      separator: '.',
      prefix: 'INBOX.',
      sharedRoot: (user) => `#shared.${user}`,
      users: opts.users.map((u) => ({ ...u })),
      admins: admins.map((u) => ({ ...u })),
      logPath: path.join(dir, 'courier.log'),
    };
    const folders = opts.folders ?? [];
    return await setUpOrStop(server, async () => {
      if (!folders.length) return;
      for (const u of opts.users) {
        await imapScript(port, [`LOGIN ${imapQuote(u.username)} ${imapQuote(u.password)}`, ...folders.map((f) => `CREATE ${imapQuote(`INBOX.${f.join('.')}`)}`)]);
      }
    });
  } catch (err) {
    if (!process.env.MAILFERRY_LAB_KEEP) rmSync(dir, { recursive: true, force: true });
    throw err;
  }
}
