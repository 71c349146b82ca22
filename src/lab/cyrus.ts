/**
 * Throwaway real Cyrus IMAP servers for tests, shaped like `startDovecot` (dovecot.ts).
 *
 * Cyrus's Debian packages conflict with dovecot-imapd, so scripts/lab-servers.sh unpacks
 * them (and the libraries this machine lacks) into `.lab/root` without installing them;
 * a system-wide Cyrus is used when there is none there. Each server lives in a fresh
 * temp dir (imapd.conf, cyrus.conf, mailbox database, spool, sasldb), prefers /dev/shm
 * (Cyrus fsyncs every APPEND; on tmpfs that costs nothing) and listens on a free
 * loopback port. Nothing in /etc or /var is read or written.
 *
 * - Cyrus refuses to run as root: as root, `master` (and `saslpasswd2`) run as `nobody`
 *   (or MAILFERRY_LAB_MAIL_USER), like the Dovecot lab's mail processes.
 * - Authentication is real: SASL auxprop `sasldb` in the temp dir, users created with
 *   `saslpasswd2`. `admins` become Cyrus admins (`admins:`), which may also log in *as* a
 *   user with SASL PLAIN authzid=user, authcid=admin (proxy authorization) — SPEC §2's
 *   `user*admin`.
 * - Namespaces: by default the classic one (`INBOX.` personal prefix, `.` separator,
 *   `user.` other users); `separator: '/'` sets `unixhierarchysep`, `altNamespace` puts
 *   personal folders at the top level (Cyrus 3's own defaults are both on).
 * - `munge8bit` is off unless asked for: Cyrus's default (on) rewrites every 8-bit byte
 *   in an APPENDed message's header to `X`, which byte-exact tests cannot use.
 * - Lifecycle as in dovecot.ts (server-process.ts): a `sh` wrapper whose stdin is a pipe
 *   from this process stops Cyrus and removes the temp dir at `stop()` or when this
 *   process dies (also SIGKILL). Cyrus's master stops its imapd children on SIGTERM.
 *
 * Cyrus logs only to syslog (usually absent in containers), so a failed start reports
 * what it can: the wrapper's output and whether anything answered on the port.
 *
 * Also exports the small pieces courier.ts shares: finding `.lab/root`, the temp dir,
 * the account checks, and a minimal IMAP command runner for setting servers up.
 */
import { spawnSync } from 'node:child_process';
import { accessSync, chownSync, chmodSync, constants as fsConstants, existsSync, mkdirSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { LabUser, SpecialUseFlag } from './dovecot.js';
import { LAB_HOST, LabServerUnavailable, type Account, type LabServerHandle, checkServerName, labAccount, serverHandle, setUpOrStop, startWrapped } from './server-process.js';

export type { LabUser, SpecialUseFlag } from './dovecot.js';

// ---------------------------------------------------------------------------------------
// Shared with courier.ts
// ---------------------------------------------------------------------------------------

/**
 * The folder scripts/lab-servers.sh unpacks the packages into: MAILFERRY_LAB_ROOT, else
 * the first `.lab/root` (with its `.complete` marker) above this module (src/lab or
 * dist/src/lab), else null.
 */
export function labPackageRoot(): string | null {
  const env = process.env.MAILFERRY_LAB_ROOT;
  if (env) return existsSync(env) ? path.resolve(env) : null;
  let dir = path.dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 6; i++) {
    const candidate = path.join(dir, '.lab', 'root');
    if (existsSync(path.join(candidate, '.complete'))) return candidate;
    const up = path.dirname(dir);
    if (up === dir) break;
    dir = up;
  }
  return null;
}

/** The libraries of an unpacked root, for LD_LIBRARY_PATH (empty for the system root). */
export function libraryPath(root: string): string {
  if (root === '/') return process.env.LD_LIBRARY_PATH ?? '';
  const dirs = ['usr/lib/x86_64-linux-gnu', 'lib/x86_64-linux-gnu', 'usr/lib/aarch64-linux-gnu', 'lib/aarch64-linux-gnu', 'usr/lib']
    .map((d) => path.join(root, d))
    .filter((d) => existsSync(d));
  return [...dirs, ...(process.env.LD_LIBRARY_PATH ? [process.env.LD_LIBRARY_PATH] : [])].join(':');
}

export function isExecutable(p: string): boolean {
  try {
    accessSync(p, fsConstants.X_OK);
    return statSync(p).isFile();
  } catch {
    return false;
  }
}

/** A fresh private dir for one server, on tmpfs when there is one (fsync is free there). */
export function makeServerDir(kind: string, name: string): string {
  const bases = [process.env.MAILFERRY_LAB_TMP, '/dev/shm', os.tmpdir()].filter((b): b is string => !!b);
  for (const base of bases) {
    try {
      accessSync(base, fsConstants.W_OK);
      const dir = mkdtempSync(path.join(base, `mailferry-lab-${kind}-${name}-`));
      // Paths go unquoted into config files.
      if (!/^[A-Za-z0-9_./-]+$/.test(dir)) {
        rmSync(dir, { recursive: true, force: true });
        continue;
      }
      chmodSync(dir, 0o711);
      return dir;
    } catch {
      // next base
    }
  }
  throw new Error(`lab: cannot create a temp dir for ${kind} '${name}' (tried ${bases.join(', ')})`);
}

function checkLabUserName(u: LabUser, kind: string): void {
  // Plain names only: they become Cyrus mailbox names and Courier userdb keys.
  if (!/^[a-z0-9][a-z0-9_-]*$/.test(u.username)) throw new Error(`lab: unusable ${kind} name ${JSON.stringify(u.username)} (use [a-z0-9_-])`);
  if (!u.password || /[\x00-\x1f\s]/.test(u.password)) throw new Error(`lab: the password of ${u.username} must be non-empty without blanks or control characters`);
}

/** Checks a Cyrus or Courier server's name, users and admins; returns the admins and everyone. */
export function checkLabAccounts(opts: { name: string; users: LabUser[]; admins?: LabUser[] }): { admins: LabUser[]; all: LabUser[] } {
  checkServerName(opts.name);
  const admins = opts.admins ?? [];
  for (const u of opts.users) checkLabUserName(u, 'user');
  for (const u of admins) checkLabUserName(u, 'admin');
  const all = [...opts.users, ...admins];
  if (new Set(all.map((u) => u.username)).size !== all.length) throw new Error('lab: user and admin names must be unique');
  return { admins, all };
}

/** An IMAP quoted string (lab names and passwords never hold CR, LF or NUL). */
export function imapQuote(s: string): string {
  return `"${s.replace(/\\/g, '\\\\').replace(/"/g, '\\"')}"`;
}

/**
 * Runs IMAP commands in order on one plaintext connection, for setting a lab server up.
 * Each command is sent whole (no literals); a NO/BAD answer rejects with the server's
 * text unless the command is marked `{ allowNo: true }`. Ends with LOGOUT. Resolves to
 * the untagged and tagged answers, in order (not the greeting and LOGOUT's).
 */
export function imapScript(port: number, commands: (string | { command: string; allowNo: true })[], timeoutMs = 15_000): Promise<string[]> {
  return new Promise((resolve, reject) => {
    const sock = net.connect({ host: LAB_HOST, port });
    const answers: string[] = [];
    let buf = '';
    let greeted = false;
    let i = 0;
    let transcript = '';
    const timer = setTimeout(() => fail(new Error(`lab: IMAP set-up timed out; transcript:\n${transcript.slice(-2000)}`)), timeoutMs);
    const fail = (err: Error) => {
      clearTimeout(timer);
      sock.destroy();
      reject(err);
    };
    const sendNext = () => {
      const c = commands[i];
      const line = c === undefined ? `z LOGOUT` : `t${i} ${typeof c === 'string' ? c : c.command}`;
      transcript += `C: ${line.replace(/^(t\d+ (LOGIN|AUTHENTICATE) \S+).*/i, '$1 …')}\n`;
      sock.write(`${line}\r\n`);
    };
    sock.setEncoding('utf8');
    sock.on('data', (d: string) => {
      buf += d;
      let nl: number;
      while ((nl = buf.indexOf('\r\n')) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 2);
        transcript += `S: ${line}\n`;
        if (!greeted) {
          greeted = true;
          if (!line.startsWith('* OK')) return fail(new Error(`lab: unexpected greeting ${line}`));
          sendNext();
          continue;
        }
        if (line.startsWith('z ')) {
          clearTimeout(timer);
          sock.end();
          return resolve(answers);
        }
        const m = /^t(\d+) (OK|NO|BAD)\b(.*)$/.exec(line);
        if (!m || Number(m[1]) !== i) {
          if (line.startsWith('* ')) answers.push(line);
          continue;
        }
        const c = commands[i]!;
        if (m[2] !== 'OK' && !(typeof c !== 'string' && c.allowNo && m[2] === 'NO')) {
          return fail(new Error(`lab: IMAP set-up command failed: ${line}\ntranscript:\n${transcript.slice(-2000)}`));
        }
        answers.push(line);
        i++;
        sendNext();
      }
    });
    sock.on('error', (err) => fail(new Error(`lab: IMAP set-up connection failed: ${err.message}`)));
    sock.on('close', () => fail(new Error(`lab: IMAP set-up connection closed; transcript:\n${transcript.slice(-2000)}`)));
  });
}

// ---------------------------------------------------------------------------------------
// Cyrus
// ---------------------------------------------------------------------------------------

const PORT_ATTEMPTS = 4;

export interface CyrusOptions {
  /** Used in the temp dir name, e.g. 'source' / 'target'. [A-Za-z0-9_-]+ */
  name: string;
  /** Users with a mailbox (INBOX created) and a sasldb password. */
  users: LabUser[];
  /**
   * Cyrus admins (`admins:`): see every mailbox under `user.`, and may log in as any user
   * with SASL PLAIN authzid=user, authcid=admin. They have no mailbox of their own.
   */
  admins?: LabUser[];
  /** Hierarchy separator: '.' (default) or '/' (`unixhierarchysep: yes`). */
  separator?: '.' | '/';
  /**
   * `altnamespace: yes`: personal folders at the top level (prefix ''), as Cyrus 3 does by
   * default. Default false: the classic `INBOX.` personal namespace.
   */
  altNamespace?: boolean;
  /** Folders created in every user's mailbox with that special use (RFC 6154 CREATE USE). */
  specialUse?: Partial<Record<SpecialUseFlag, string>>;
  /** Cyrus's own default (true) turns 8-bit header bytes into 'X'. Default false here. */
  munge8bit?: boolean;
  /** Capabilities Cyrus stops advertising (`suppress_capabilities`), e.g. ['CONDSTORE', 'QRESYNC']. */
  suppressCapabilities?: string[];
  /** Appended verbatim to imapd.conf. */
  extraConfig?: string;
}

export interface CyrusServer extends LabServerHandle {
  name: string;
  separator: '.' | '/';
  /** Personal namespace prefix as users see it: 'INBOX.' / 'INBOX/' (classic) or '' (altnamespace). */
  prefix: string;
  /** Where an admin sees a user's mailbox: 'user.alice' / 'user/alice'. */
  userMailbox(user: string): string;
  /** The personal path a user sees for a folder given as segments (['INBOX'] is INBOX). */
  folderPath(segments: readonly string[]): string;
  users: LabUser[];
  admins: LabUser[];
  /** e.g. 'Cyrus IMAP 3.6.1-Debian-…' from the greeting. */
  version: string;
  /** The (syslog-less) wrapper output; Cyrus itself logs only to syslog. */
  logPath: string;
}

interface CyrusInstall {
  root: string;
  master: string;
  imapd: string;
  saslpasswd2: string;
}

function findCyrus(): CyrusInstall | string {
  const roots = [labPackageRoot(), process.env.MAILFERRY_LAB_ROOT ? null : '/'].filter((r): r is string => !!r);
  for (const root of roots) {
    const bin = path.join(root, 'usr/lib/cyrus/bin');
    const inst = { root, master: path.join(bin, 'master'), imapd: path.join(bin, 'imapd'), saslpasswd2: path.join(root, 'usr/sbin/saslpasswd2') };
    if (isExecutable(inst.master) && isExecutable(inst.imapd) && isExecutable(inst.saslpasswd2)) return inst;
  }
  return 'Cyrus IMAP is not available: run `bash scripts/lab-servers.sh` (unpacks cyrus-imapd into .lab/root; needs apt-get download) or set MAILFERRY_LAB_ROOT';
}

/** Null when startCyrus can work here, else the reason it cannot (for a test's skip message). */
export function cyrusUnavailableReason(): string | null {
  const inst = findCyrus();
  if (typeof inst === 'string') return inst;
  try {
    labAccount();
  } catch (err) {
    return (err as Error).message;
  }
  return null;
}

function saslpasswd(inst: CyrusInstall, acct: Account, sasldb: string, realm: string, user: LabUser): void {
  const r = spawnSync(inst.saslpasswd2, ['-p', '-c', '-f', sasldb, '-u', realm, user.username], {
    input: `${user.password}\n`,
    env: { PATH: process.env.PATH ?? '/usr/bin:/bin', LD_LIBRARY_PATH: libraryPath(inst.root) },
    ...(process.getuid?.() === 0 ? { uid: acct.uid, gid: acct.gid } : {}),
    encoding: 'utf8',
    timeout: 10_000,
  });
  if (r.status !== 0) throw new Error(`lab: saslpasswd2 for ${user.username} failed (${r.status ?? r.signal}): ${r.stderr || r.error?.message || ''}`);
}

export async function startCyrus(opts: CyrusOptions): Promise<CyrusServer> {
  const inst = findCyrus();
  if (typeof inst === 'string') throw new LabServerUnavailable(`lab: ${inst}`);
  const { admins, all } = checkLabAccounts(opts);
  for (const cap of opts.suppressCapabilities ?? []) if (!/^[A-Z0-9=+-]+$/i.test(cap)) throw new Error(`lab: bad capability ${JSON.stringify(cap)}`);
  const sep = opts.separator ?? '.';
  const alt = opts.altNamespace ?? false;
  const acct = labAccount();
  const isRoot = process.getuid?.() === 0;

  const dir = makeServerDir('cyrus', opts.name);
  try {
    // Everything below dir belongs to the server's user; dir itself stays ours (0711).
    const own = (p: string) => {
      if (isRoot) chownSync(p, acct.uid, acct.gid);
    };
    for (const sub of ['conf', 'spool', 'sieve', 'run']) {
      mkdirSync(path.join(dir, sub), { mode: 0o700 });
      own(path.join(dir, sub));
    }
    // The set-up admin: creates the users' mailboxes over IMAP like a real admin would.
    const setup: LabUser = { username: `mflab-setup-${path.basename(dir).slice(-6).toLowerCase().replace(/[^a-z0-9]/g, 'x')}`, password: `setup-${process.pid}-${Date.now()}` };
    // Also the SASL realm and the greeting's host name: identifies our server on the port.
    const serverName = `mflab-${path.basename(dir).replace(/[^A-Za-z0-9-]/g, '-')}`.toLowerCase();
    const sasldb = path.join(dir, 'conf', 'sasldb2');
    for (const u of [...all, setup]) saslpasswd(inst, acct, sasldb, serverName, u);

    const imapdConf = path.join(dir, 'imapd.conf');
    const cyrusConf = path.join(dir, 'cyrus.conf');
    const writeConfig = (port: number) => {
      const conf = [
        '# Generated by mailferry src/lab/cyrus.ts: a throwaway test server.',
        `configdirectory: ${dir}/conf`,
        `partition-default: ${dir}/spool`,
        `sievedir: ${dir}/sieve`,
        `servername: ${serverName}`,
        `admins: ${[...admins.map((a) => a.username), setup.username].join(' ')}`,
        `cyrus_user: ${acct.user}`,
        `unixhierarchysep: ${sep === '/' ? 'yes' : 'no'}`,
        `altnamespace: ${alt ? 'yes' : 'no'}`,
        'sasl_pwcheck_method: auxprop',
        'sasl_auxprop_plugin: sasldb',
        `sasl_sasldb_path: ${sasldb}`,
        'sasl_mech_list: PLAIN LOGIN',
        // Test clients log in over plaintext loopback connections.
        'allowplaintext: yes',
        // Failed logins are part of the tests; Cyrus would otherwise answer each after 3 s.
        'failedloginpause: 0',
        `munge8bit: ${opts.munge8bit ? 'yes' : 'no'}`,
        // Sockets and the pid file in the temp dir, not /run/cyrus.
        `idlesocket: ${dir}/run/idle`,
        `lmtpsocket: ${dir}/run/lmtp`,
        `notifysocket: ${dir}/run/notify`,
        `mboxname_lockpath: ${dir}/run/lock`,
        'syslog_prefix: mailferry-lab-cyrus',
        ...(opts.suppressCapabilities?.length ? [`suppress_capabilities: ${opts.suppressCapabilities.join(' ')}`] : []),
        ...(opts.extraConfig ? [opts.extraConfig] : []),
      ];
      writeFileSync(imapdConf, conf.join('\n') + '\n', { mode: 0o644 });
      // imapd does not inherit master's -C: it gets it on its own command line.
      writeFileSync(
        cyrusConf,
        ['START {', '}', 'SERVICES {', `  imap cmd="${inst.imapd} -C ${imapdConf}" listen="${LAB_HOST}:${port}" prefork=1`, '}', 'EVENTS {', '}', 'DAEMON {', '}', ''].join('\n'),
        { mode: 0o644 },
      );
    };

    const env: NodeJS.ProcessEnv = { PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin', LD_LIBRARY_PATH: libraryPath(inst.root), ...(process.env.MAILFERRY_LAB_KEEP ? { MAILFERRY_LAB_KEEP: '1' } : {}) };
    const masterCmd = [inst.master, '-C', imapdConf, '-M', cyrusConf, '-p', path.join(dir, 'run', 'master.pid'), '-D'];
    const command = isRoot ? ['setpriv', `--reuid=${acct.uid}`, `--regid=${acct.gid}`, '--clear-groups', '--', ...masterCmd] : masterCmd;

    let greeting = '';
    const { run, port } = await startWrapped({
      what: 'cyrus',
      name: opts.name,
      dir,
      attempts: PORT_ATTEMPTS,
      prepare: (port) => {
        writeConfig(port);
        return { command, env };
      },
      ours: (g) => {
        greeting = g;
        return g.startsWith('* OK') && g.includes(` ${serverName} `);
      },
      // Only a port taken between our probe and master's bind is worth another attempt.
      retryOn: /someone else's greeting|nothing answered/,
      note: '(Cyrus logs only to syslog)',
    });
    const server: CyrusServer = {
      ...serverHandle(run, port),
      name: opts.name,
      separator: sep,
      prefix: alt ? '' : `INBOX${sep}`,
      userMailbox: (user) => `user${sep}${user}`,
      folderPath: (segs) => (segs.length === 1 && segs[0]!.toUpperCase() === 'INBOX' ? 'INBOX' : segs[0]!.toUpperCase() === 'INBOX' ? segs.join(sep) : (alt ? '' : `INBOX${sep}`) + segs.join(sep)),
      users: opts.users.map((u) => ({ ...u })),
      admins: admins.map((u) => ({ ...u })),
      version: /(Cyrus IMAP [^ ]+)/.exec(greeting)?.[1] ?? 'Cyrus IMAP',
      logPath: path.join(dir, 'startup.log'),
    };
    return await setUpOrStop(server, () => createMailboxes(server, setup, opts));
  } catch (err) {
    if (!process.env.MAILFERRY_LAB_KEEP) rmSync(dir, { recursive: true, force: true });
    throw err;
  }
}

/** CREATE user.<name> for each user, and their special-use folders, as the set-up admin. */
async function createMailboxes(server: CyrusServer, setup: LabUser, opts: CyrusOptions): Promise<void> {
  const commands: string[] = [`LOGIN ${imapQuote(setup.username)} ${imapQuote(setup.password)}`];
  for (const u of opts.users) {
    const root = server.userMailbox(u.username);
    commands.push(`CREATE ${imapQuote(root)}`);
    for (const [use, name] of Object.entries(opts.specialUse ?? {})) {
      if (!name) continue;
      if (!/^[\x20-\x7e]+$/.test(name) || name.includes(server.separator)) throw new Error(`lab: special-use folder name must be printable ASCII without the separator: ${JSON.stringify(name)}`);
      commands.push(`CREATE ${imapQuote(`${root}${server.separator}${name}`)} (USE (${use}))`);
    }
  }
  await imapScript(server.port, commands);
}
