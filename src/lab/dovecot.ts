/**
 * Throwaway real Dovecot IMAP servers for tests, the benchmark and the demo.
 *
 * Each server lives entirely in a fresh temp dir (config, sockets, state, log, mail,
 * TLS cert) and listens on free loopback ports, so any number can run at once, also
 * from parallel test processes, and /etc/dovecot is never read or touched.
 *
 * Storage: the '.' server uses Maildir++ (`maildir:~/Maildir`), whose on-disk layout
 * *is* the '.' hierarchy; the '/' server uses sdbox, whose default layout is a plain
 * directory tree with '/' as separator. sdbox rather than `maildir:…:LAYOUT=fs` because
 * it has no INBOX-vs-`cur/new/tmp` name clashes, stores any number of keywords (Maildir
 * names keywords by letters a–z in file names, so only 26 per folder survive outside the
 * index) and so the two lab servers also exercise two different storage backends.
 *
 * Lifecycle: Dovecot runs in the foreground (`-F`) under a tiny `sh` wrapper whose stdin
 * is a pipe from this process. When that pipe reaches EOF — `stop()`, or this process
 * dying in any way, even SIGKILL — the wrapper terminates Dovecot (SIGTERM) and deletes
 * the temp dir. That is what makes "never leak a server" hold without relying on Node's
 * exit hooks. The wrapper, starting and stopping are server-process.ts's, shared with the
 * Cyrus and Courier labs. Not as root, Dovecot runs "rootless" as the current user.
 */
import { spawn, execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, writeFileSync, rmSync, chmodSync, chownSync, mkdirSync, accessSync, constants as fsConstants } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { ImapEndpoint } from '../imap/endpoint.js';
import { LAB_HOST, type Account, type Running, checkServerName, freePort, labAccount, startWrapped, stopOnce } from './server-process.js';

export interface LabUser {
  username: string;
  password: string;
}

export type SpecialUseFlag = '\\Sent' | '\\Drafts' | '\\Trash' | '\\Junk' | '\\Archive';

export interface DovecotOptions {
  /** Used in the temp dir name and Dovecot's instance name, e.g. 'source' / 'target'. */
  name: string;
  /** Hierarchy separator of the personal namespace (prefix empty, inbox=yes). */
  separator: '.' | '/';
  /** Regular users (passwd-file passdb). */
  users: LabUser[];
  /** Master users: `user*master` LOGIN and SASL PLAIN authzid=user, authcid=master both work. */
  masterUsers?: LabUser[];
  /** Folders auto-created and subscribed, carrying that SPECIAL-USE flag (RFC 6154). */
  specialUse?: Partial<Record<SpecialUseFlag, string>>;
  /** APPENDs bigger than this many bytes get a tagged `NO [LIMIT]` (quota_max_mail_size). */
  maxMailSize?: number;
  /** Each user's storage quota in KiB (quota_rule `*:storage=`): APPENDs that would go
   * over it get `NO [OVERQUOTA] Quota exceeded…`. Default: unlimited. */
  quotaKb?: number;
  /**
   * Capabilities to stop advertising, e.g. ['CONDSTORE', 'UIDPLUS', 'LITERAL+'].
   * Post-login capabilities are rewritten via `imap_capability` (which Dovecot then also
   * shows in the greeting); 'AUTH=LOGIN' removes that SASL mechanism. 'AUTH=PLAIN' and
   * 'STARTTLS' are refused (Dovecot's LOGIN command needs PLAIN; use tls 'none' for no
   * STARTTLS); so are names Dovecot does not advertise. Removing CONDSTORE also removes
   * QRESYNC (RFC 7162: QRESYNC implies CONDSTORE). Dovecot only stops *advertising*: it
   * still accepts the commands and still puts APPENDUID/COPYUID codes into its answers
   * without UIDPLUS — a client must itself ignore what was not advertised.
   */
  disableCapabilities?: string[];
  /** 'selfsigned': implicit TLS on `sslPort`, STARTTLS on `port`. Default 'none'. */
  tls?: 'none' | 'selfsigned';
  /** Appended verbatim to dovecot.conf. */
  extraConfig?: string;
  /**
   * A `checkpassword` passdb (the qmail interface Dovecot 2.3 implements): `script` is
   * written into the temp dir as an executable and run for each login with
   * `user NUL password NUL` on fd 3; it exits 1 to refuse, or execs its first argument
   * (Dovecot's checkpassword-reply) after exporting `USER=<name>` to log the session in as
   * that user. Tried before the passwd-file users, so it can emulate servers with their
   * own admin-login syntax (Exchange `Domain/Admin/User`, Mirapoint `#user@domain#admin#`).
   * Setting it also allows any character in user names (`auth_username_chars` empty):
   * those syntaxes need `/` and `#`, which Dovecot's default list refuses before any
   * passdb runs. Default: no checkpassword passdb.
   */
  checkpassword?: { script: string };
  /**
   * Other users' mailboxes, each under `<prefix><user><separator>` (Dovecot
   * `type = shared` namespace, RFC 2342's "other users' namespace"), e.g. prefix 'users/'
   * gives `users/alberta` (alberta's INBOX) and `users/alberta/Sent`. Uses the ACL plugin:
   * a user sees another's folders once the owner granted rights with SETACL (RFC 4314),
   * which also records them in the shared-mailbox dictionary that LIST needs to find
   * them. Default: no such namespace, no ACL plugin.
   */
  sharedNamespace?: { prefix: string };
  /**
   * Public folders under `prefix` (Dovecot `type = public` namespace, RFC 2342's "shared
   * namespace", like Courier's `#shared.`), stored once in the temp dir and open to every
   * user. The prefix must end with the separator. Together with `sharedNamespace` the
   * ACL plugin applies to it too, and nobody has rights on public folders. Default: none.
   */
  publicNamespace?: { prefix: string };
  /**
   * Each user's home (where the mail is), relative to the lab's home root, as a Dovecot
   * variable template. Default '%u'. E.g. `%{if;%{master_user};eq;;%u;%{master_user}}`
   * puts master-user sessions into the master's own mailbox, emulating a server that
   * ignores the requested user.
   */
  homeTemplate?: string;
}

export interface DovecotServer {
  name: string;
  host: '127.0.0.1';
  /** Plain IMAP (STARTTLS offered when tls is 'selfsigned'). */
  port: number;
  /** Implicit-TLS IMAP, only when tls is 'selfsigned'. */
  sslPort?: number;
  /** PEM of the self-signed certificate (its own CA), only when tls is 'selfsigned'. */
  certPath?: string;
  /** The temp dir holding everything; removed by stop(). */
  dir: string;
  separator: '.' | '/';
  logPath: string;
  /** Endpoint for the given mode (default 'none'); TLS modes accept the self-signed cert. */
  endpoint(tls?: 'none' | 'implicit' | 'starttls'): ImapEndpoint;
  /** Sets every user's storage quota in KiB (servers started with `quotaKb` only), for the next logins. */
  setQuotaKb(kb: number): Promise<void>;
  /** Stops Dovecot, waits for it, removes the temp dir. Idempotent. */
  stop(): Promise<void>;
}

const PORT_ATTEMPTS = 5;

/**
 * What Dovecot 2.3 advertises after login by default; used only if asking the installed
 * `imap` binary fails (the live answer wins because plugins and versions change it).
 */
const DOVECOT_23_CAPABILITIES =
  'IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE SORT SORT=DISPLAY THREAD=REFERENCES ' +
  'THREAD=REFS THREAD=ORDEREDSUBJECT MULTIAPPEND URL-PARTIAL CATENATE UNSELECT CHILDREN ' +
  'NAMESPACE UIDPLUS LIST-EXTENDED I18NLEVEL=1 CONDSTORE QRESYNC ESEARCH ESORT SEARCHRES ' +
  'WITHIN CONTEXT=SEARCH LIST-STATUS BINARY MOVE SNIPPET=FUZZY PREVIEW=FUZZY PREVIEW ' +
  'STATUS=SIZE SAVEDATE LITERAL+ NOTIFY SPECIAL-USE';

/** Path of the dovecot binary if installed (MAILFERRY_DOVECOT overrides), else null. */
export function dovecotBinary(): string | null {
  const candidates = [process.env.MAILFERRY_DOVECOT, '/usr/sbin/dovecot', '/usr/local/sbin/dovecot'];
  for (const dir of (process.env.PATH ?? '').split(path.delimiter)) {
    if (dir) candidates.push(path.join(dir, 'dovecot'));
  }
  for (const c of candidates) {
    if (!c) continue;
    try {
      accessSync(c, fsConstants.X_OK);
      return c;
    } catch {
      // try the next one
    }
  }
  return null;
}

/** The `imap` executable that the master runs after login; needed to ask its capabilities. */
function imapBinary(dovecot: string): string | null {
  const prefix = path.dirname(path.dirname(dovecot));
  for (const c of [
    path.join(prefix, 'lib/dovecot/imap'),
    path.join(prefix, 'libexec/dovecot/imap'),
    '/usr/lib/dovecot/imap',
    '/usr/libexec/dovecot/imap',
  ]) {
    if (existsSync(c)) return c;
  }
  return null;
}

/** Dovecot config string literal. */
function q(s: string): string {
  return `"${s.replace(/\\/g, '\\\\').replace(/"/g, '\\"')}"`;
}

function checkUser(u: LabUser, kind: string): void {
  // ':' and newlines would break the passwd-file; '*' is the master separator; '/' and
  // '%' would escape or be expanded in the home path that %u builds.
  if (!u.username || /[:*/%\s\\"\x00-\x1f]/.test(u.username)) {
    throw new Error(`lab: unusable ${kind} name ${JSON.stringify(u.username)}`);
  }
}

function passwdFile(users: LabUser[], quotaKb?: number): string {
  // BASE64 so that any password (also with ':' in it) survives the passwd-file format.
  // The quota goes in the extra fields (the 8th), as a userdb field that overrides the
  // plugin's quota_rule, so that a test can change a quota without restarting Dovecot
  // (setQuotaKb).
  const extra = quotaKb === undefined ? '' : `::::::userdb_quota_rule=*:storage=${Math.floor(quotaKb)}K`;
  return users.map((u) => `${u.username}:{PLAIN.BASE64}${Buffer.from(u.password, 'utf8').toString('base64')}${extra}\n`).join('');
}

/**
 * Asks the installed `imap` binary, in PREAUTH mode with this very config, what it
 * advertises after login. Runs as the mail user (mail processes never run as root) in a
 * scratch home that is thrown away.
 */
function probeCapabilities(dovecot: string, confPath: string, dir: string, acct: Account): Promise<string[]> {
  const imap = imapBinary(dovecot);
  if (!imap) return Promise.resolve(DOVECOT_23_CAPABILITIES.split(' '));
  const home = path.join(dir, 'probe-home');
  mkdirSync(home, { mode: 0o700 });
  if (process.getuid?.() === 0) chownSync(home, acct.uid, acct.gid);
  return new Promise((resolve) => {
    const child = spawn(imap, ['-c', confPath], {
      env: { USER: 'lab-capability-probe', HOME: home, PATH: process.env.PATH ?? '/usr/bin:/bin' },
      uid: acct.uid,
      gid: acct.gid,
      stdio: ['pipe', 'pipe', 'ignore'],
    });
    let out = '';
    const fallback = () => resolve(DOVECOT_23_CAPABILITIES.split(' '));
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
    }, 5000);
    child.stdout.setEncoding('latin1');
    child.stdout.on('data', (d: string) => (out += d));
    child.on('error', () => {
      clearTimeout(timer);
      fallback();
    });
    child.on('close', () => {
      clearTimeout(timer);
      rmSync(home, { recursive: true, force: true });
      const m = /\[CAPABILITY ([^\]]+)\]/.exec(out);
      if (m?.[1]) resolve(m[1].trim().split(/\s+/));
      else fallback();
    });
    child.stdin.end('a LOGOUT\r\n');
  });
}

function generateCert(dir: string): { cert: string; key: string } {
  const cert = path.join(dir, 'tls-cert.pem');
  const key = path.join(dir, 'tls-key.pem');
  // EC P-256: generated in milliseconds, unlike RSA. SAN covers how tests connect.
  execFileSync(
    'openssl',
    [
      'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
      '-keyout', key, '-out', cert, '-days', '3650', '-subj', '/CN=localhost',
      '-addext', 'subjectAltName=IP:127.0.0.1,DNS:localhost',
    ],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  chmodSync(key, 0o600);
  chmodSync(cert, 0o644);
  return { cert, key };
}

interface ConfigInput {
  opts: DovecotOptions;
  dir: string;
  acct: Account;
  port: number;
  sslPort: number | undefined;
  certs: { cert: string; key: string } | undefined;
  capabilities: string[] | undefined;
  authMechanisms: string[];
}

function buildConfig(c: ConfigInput): string {
  const { opts, dir, acct } = c;
  const isRoot = process.getuid?.() === 0;
  const home = path.join(dir, 'home');
  const location = opts.separator === '.' ? 'maildir:~/Maildir' : 'sdbox:~/sdbox';
  const L: string[] = [];
  L.push(
    '# Generated by mailferry src/lab/dovecot.ts: a throwaway test server.',
    `instance_name = ${path.basename(dir)}`,
    `base_dir = ${dir}/run`,
    `state_dir = ${dir}/state`,
    `log_path = ${dir}/dovecot.log`,
    'protocols = imap',
    `listen = ${LAB_HOST}`,
    // Lets the readiness check tell our server from whatever else might hold the port.
    `login_greeting = ${greetingOf(dir)}`,
    // Test clients use LOGIN over plaintext loopback connections.
    'disable_plaintext_auth = no',
    `auth_mechanisms = ${c.authMechanisms.join(' ')}`,
    'auth_master_user_separator = *',
    'auth_cache_size = 1M',
    // Negative caching would make a "wrong password, then right one" test flaky.
    'auth_cache_negative_ttl = 0',
    // Failed logins are part of the tests; don't make them wait seconds. (Dovecot 2.3
    // still answers a failure only at its next 500 ms failure-queue tick; the passdb
    // 'nodelay' field that would avoid that is dropped when the passdb fails.)
    'auth_failure_delay = 0',
    'auth_verbose = yes',
    // Admin-login syntaxes (`Domain/Admin/User`, `#user@domain#admin#`) carry characters
    // the default list refuses before the checkpassword script could see them.
    ...(opts.checkpassword ? ['auth_username_chars ='] : []),
    `mail_location = ${location}`,
    `mail_uid = ${acct.uid}`,
    `mail_gid = ${acct.gid}`,
    'first_valid_uid = 1',
    'first_valid_gid = 1',
    // Speed over durability: the lab's mail is thrown away anyway.
    'mail_fsync = never',
    'maildir_very_dirty_syncs = yes',
    // The benchmark opens many parallel sessions for one user from one IP.
    'mail_max_userip_connections = 200',
    'default_process_limit = 500',
    'default_client_limit = 5000',
    // Big messages (tens of MB) must not hit the default 256M address-space cap.
    'default_vsz_limit = 1G',
  );
  if (c.certs) {
    L.push('ssl = yes', `ssl_cert = <${c.certs.cert}`, `ssl_key = <${c.certs.key}`, 'ssl_min_protocol = TLSv1.2');
  } else {
    L.push('ssl = no');
  }
  if (!isRoot) {
    // Rootless Dovecot: every process runs as the invoking user, no chroots.
    const me = os.userInfo().username;
    L.push(`default_internal_user = ${me}`, `default_login_user = ${me}`);
    let group = String(acct.gid);
    try {
      group = execFileSync('id', ['-gn'], { encoding: 'utf8' }).trim() || group;
    } catch {
      // keep the numeric gid
    }
    L.push(`default_internal_group = ${group}`);
  }
  if (opts.maxMailSize !== undefined || opts.quotaKb !== undefined) {
    // The quota plugin checks quota_max_mail_size against the APPEND literal's size
    // before reading it, so the refusal is a tagged NO [LIMIT] (sent instead of the "+"
    // continuation for a synchronizing literal). Without quotaKb storage is unlimited.
    L.push(
      'mail_plugins = $mail_plugins quota',
      'plugin {',
      '  quota = count:User quota',
      '  quota_vsizes = yes',
      ...(opts.maxMailSize !== undefined ? [`  quota_max_mail_size = ${Math.floor(opts.maxMailSize)}`] : []),
      '}',
    );
  }
  if (c.capabilities) {
    L.push(`imap_capability = ${c.capabilities.join(' ')}`);
  }
  if (opts.masterUsers?.length) {
    // pass = yes: after the master's password matched, the regular passdb must still
    // know the target user.
    L.push(
      'passdb {',
      '  driver = passwd-file',
      `  args = ${dir}/master-users`,
      '  master = yes',
      '  pass = yes',
      '}',
    );
  }
  if (opts.checkpassword) {
    L.push(
      'passdb {',
      '  driver = checkpassword',
      `  args = ${dir}/checkpassword`,
      '}',
    );
  }
  L.push(
    'passdb {',
    '  driver = passwd-file',
    `  args = ${dir}/users`,
    '}',
    'userdb {',
    '  driver = static',
    `  args = uid=${acct.uid} gid=${acct.gid} home=${home}/${opts.homeTemplate ?? '%u'} allow_all_users=yes`,
    '}',
    'namespace inbox {',
    '  inbox = yes',
    `  separator = ${opts.separator}`,
    '  prefix =',
  );
  for (const [flag, name] of Object.entries(opts.specialUse ?? {})) {
    if (!name) continue;
    L.push(`  mailbox ${q(name)} {`, `    special_use = ${flag}`, '    auto = subscribe', '  }');
  }
  L.push('}');
  if (opts.sharedNamespace) {
    // %%u / %%h: the *other* user's name and home, expanded when their folders are opened.
    L.push(
      'mail_plugins = $mail_plugins acl',
      'protocol imap {',
      '  mail_plugins = $mail_plugins imap_acl',
      '}',
      'plugin {',
      '  acl = vfile',
      // LIST finds other users' folders only through this dictionary, which SETACL fills.
      `  acl_shared_dict = file:${dir}/acl-shared/shared-mailboxes.db`,
      '}',
      'namespace shared {',
      '  type = shared',
      `  separator = ${opts.separator}`,
      `  prefix = ${q(`${opts.sharedNamespace.prefix}%%u${opts.separator}`)}`,
      `  location = ${location.replace('~', '%%h')}`,
      '  subscriptions = no',
      '  list = children',
      '}',
    );
  }
  if (opts.publicNamespace) {
    const storage = opts.separator === '.' ? 'maildir' : 'sdbox';
    L.push(
      'namespace public {',
      '  type = public',
      `  separator = ${opts.separator}`,
      // Quoted: a prefix such as Courier's `#shared.` would otherwise start a comment.
      `  prefix = ${q(opts.publicNamespace.prefix)}`,
      `  location = ${storage}:${dir}/public`,
      '  subscriptions = no',
      '  list = yes',
      '}',
    );
  }
  L.push(
    'service imap-login {',
    '  inet_listener imap {',
    `    address = ${LAB_HOST}`,
    `    port = ${c.port}`,
    '  }',
    '  inet_listener imaps {',
    `    address = ${LAB_HOST}`,
    `    port = ${c.sslPort ?? 0}`,
    ...(c.sslPort ? ['    ssl = yes'] : []),
    '  }',
    // High-performance mode: long-lived login processes instead of one fork per login.
    // With TLS they also carry every session's traffic, so keep one per core (up to 4).
    '  service_count = 0',
    `  process_min_avail = ${Math.max(1, Math.min(4, os.availableParallelism?.() ?? os.cpus().length))}`,
    ...(isRoot ? [] : ['  chroot =']),
    '}',
    // An unanswered anvil-auth-penalty socket switches Dovecot's per-IP auth penalty off;
    // otherwise every failed login from 127.0.0.1 slows the next one down by up to 15 s.
    'service anvil {',
    ...(isRoot ? [] : ['  chroot =']),
    '  unix_listener anvil-auth-penalty {',
    '    mode = 0',
    '  }',
    '}',
  );
  if (opts.extraConfig) L.push(opts.extraConfig);
  return L.join('\n') + '\n';
}

function greetingOf(dir: string): string {
  return `mailferry lab ${path.basename(dir)} ready`;
}

/** Post-login capability list with the disabled ones (and what they imply) removed. */
function filterCapabilities(all: string[], disabled: string[]): string[] {
  const known = new Set(all.map((c) => c.toUpperCase()));
  // A typo would otherwise leave the capability on and the test silently testing nothing.
  const unknown = disabled.filter((d) => !known.has(d.toUpperCase()));
  if (unknown.length) throw new Error(`lab: cannot disable ${unknown.join(', ')}: not advertised by this Dovecot (${all.join(' ')})`);
  const off = new Set(disabled.map((d) => d.toUpperCase()));
  if (off.has('CONDSTORE')) off.add('QRESYNC');
  if (off.has('LITERAL+')) off.add('LITERAL-');
  return all.filter((cap) => !off.has(cap.toUpperCase()));
}

export async function startDovecot(opts: DovecotOptions): Promise<DovecotServer> {
  const dovecot = dovecotBinary();
  if (!dovecot) throw new Error('lab: dovecot is not installed (apt-get install dovecot-imapd)');
  checkServerName(opts.name);
  if (opts.separator !== '.' && opts.separator !== '/') throw new Error(`lab: separator must be '.' or '/'`);
  for (const u of opts.users) checkUser(u, 'user');
  for (const u of opts.masterUsers ?? []) checkUser(u, 'master user');
  for (const ns of [opts.sharedNamespace, opts.publicNamespace]) {
    // '%' would be expanded; quotes, backslashes, braces and blanks are not worth escaping.
    if (ns && !/^[^\s%"\\{}]+$/.test(ns.prefix)) throw new Error(`lab: bad namespace prefix ${JSON.stringify(ns.prefix)}`);
  }
  if (opts.publicNamespace && !opts.publicNamespace.prefix.endsWith(opts.separator)) throw new Error(`lab: the public namespace prefix must end with '${opts.separator}'`);
  if (opts.homeTemplate !== undefined && !/^[^\s/"\\]+$/.test(opts.homeTemplate)) throw new Error(`lab: bad home template ${JSON.stringify(opts.homeTemplate)}`);
  for (const name of Object.values(opts.specialUse ?? {})) {
    if (name !== undefined && (!name || /[\x00-\x1f]/.test(name))) throw new Error(`lab: bad special-use folder name ${JSON.stringify(name)}`);
  }

  const acct = labAccount();
  const isRoot = process.getuid?.() === 0;
  const dir = mkdtempSync(path.join(os.tmpdir(), `mailferry-lab-${opts.name}-`));
  // Paths go unquoted into dovecot.conf (`ssl_cert = <path` cannot be quoted).
  if (!/^[A-Za-z0-9_./-]+$/.test(dir)) {
    rmSync(dir, { recursive: true, force: true });
    throw new Error(`lab: temp dir path ${dir} has characters dovecot.conf cannot take; set TMPDIR`);
  }
  try {
    // Traversable for the unprivileged mail user, not listable by others.
    chmodSync(dir, 0o711);
    const home = path.join(dir, 'home');
    mkdirSync(home, { mode: 0o700 });
    if (isRoot) chownSync(home, acct.uid, acct.gid);
    // Read by the auth process, which runs as Dovecot's internal user, not root.
    // Throwaway lab credentials on a loopback server: world-readable is acceptable.
    writeFileSync(path.join(dir, 'users'), passwdFile(opts.users, opts.quotaKb), { mode: 0o644 });
    if (opts.masterUsers?.length) writeFileSync(path.join(dir, 'master-users'), passwdFile(opts.masterUsers), { mode: 0o644 });
    // Run by the auth process (Dovecot's internal user when we are root): world-executable.
    if (opts.checkpassword) writeFileSync(path.join(dir, 'checkpassword'), opts.checkpassword.script, { mode: 0o755 });
    // Written by the mail processes (the mail user), not by us.
    for (const sub of [opts.sharedNamespace ? 'acl-shared' : null, opts.publicNamespace ? 'public' : null]) {
      if (!sub) continue;
      mkdirSync(path.join(dir, sub), { mode: 0o700 });
      if (isRoot) chownSync(path.join(dir, sub), acct.uid, acct.gid);
    }
    const certs = opts.tls === 'selfsigned' ? generateCert(dir) : undefined;

    const disabled = (opts.disableCapabilities ?? []).map((c) => c.toUpperCase());
    // Dovecot runs the LOGIN command through its PLAIN mechanism: without it LOGIN fails.
    if (disabled.includes('AUTH=PLAIN')) throw new Error('lab: AUTH=PLAIN cannot be disabled (Dovecot LOGIN needs it)');
    if (disabled.includes('STARTTLS')) throw new Error('lab: STARTTLS cannot be disabled (use tls: none)');
    const authMechanisms = disabled.includes('AUTH=LOGIN') ? ['plain'] : ['plain', 'login'];
    const capDisabled = disabled.filter((c) => !c.startsWith('AUTH='));
    const confPath = path.join(dir, 'dovecot.conf');

    let capabilities: string[] | undefined;
    const { run, port, spec } = await startWrapped({
      what: 'dovecot',
      name: opts.name,
      dir,
      attempts: PORT_ATTEMPTS,
      prepare: async (port) => {
        const sslPort = certs ? await freePort() : undefined;
        const input: ConfigInput = { opts, dir, acct, port, sslPort, certs, capabilities: undefined, authMechanisms };
        if (capDisabled.length && !capabilities) {
          writeFileSync(confPath, buildConfig(input), { mode: 0o644 });
          capabilities = filterCapabilities(await probeCapabilities(dovecot, confPath, dir, acct), capDisabled);
        }
        writeFileSync(confPath, buildConfig({ ...input, capabilities }), { mode: 0o644 });
        // A stale master.pid whose pid got reused would make Dovecot think it is running.
        rmSync(path.join(dir, 'run'), { recursive: true, force: true });
        return {
          command: [dovecot, '-F', '-c', confPath],
          env: { ...process.env, PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin' },
          tlsPort: sslPort,
        };
      },
      ours: (g) => g.startsWith('* OK') && g.endsWith(greetingOf(dir)),
      logs: ['dovecot.log'],
      // Another process may have grabbed a port between our probe and Dovecot's bind.
      retryOn: /Address already in use/i,
    });
    return makeServer(opts, dir, run, port, spec.tlsPort, certs?.cert);
  } catch (err) {
    if (!process.env.MAILFERRY_LAB_KEEP) rmSync(dir, { recursive: true, force: true });
    throw err;
  }
}

function makeServer(
  opts: DovecotOptions,
  dir: string,
  run: Running,
  port: number,
  sslPort: number | undefined,
  certPath: string | undefined,
): DovecotServer {
  const server: DovecotServer = {
    name: opts.name,
    host: LAB_HOST,
    port,
    dir,
    separator: opts.separator,
    logPath: path.join(dir, 'dovecot.log'),
    async setQuotaKb(kb) {
      if (opts.quotaKb === undefined) throw new Error(`lab: server '${opts.name}' was started without a quota`);
      writeFileSync(path.join(dir, 'users'), passwdFile(opts.users, kb), { mode: 0o644 });
      // The auth process keeps the file it read: a reload (SIGHUP to the master) starts
      // new ones, which read it again.
      const log = path.join(dir, 'dovecot.log');
      const reloads = () => (readFileSync(log, 'utf8').match(/reloading configuration/g) ?? []).length;
      const before = reloads();
      process.kill(Number(readFileSync(path.join(dir, 'run', 'master.pid'), 'utf8').trim()), 'SIGHUP');
      for (let i = 0; i < 100 && reloads() === before; i++) await new Promise((r) => setTimeout(r, 20));
    },
    endpoint(mode = 'none') {
      if (mode !== 'none' && !certPath) throw new Error(`lab: server '${opts.name}' was started without tls`);
      return {
        host: LAB_HOST,
        port: mode === 'implicit' ? sslPort! : port,
        tls: mode,
        acceptUntrustedCert: mode !== 'none',
      };
    },
    stop: stopOnce(run),
  };
  if (sslPort !== undefined) server.sslPort = sslPort;
  if (certPath !== undefined) server.certPath = certPath;
  return server;
}
