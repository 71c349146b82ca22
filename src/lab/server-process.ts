/**
 * Running one lab IMAP server as a process: the part dovecot.ts, cyrus.ts and courier.ts
 * share. It exists so that the lab's lifecycle promises — a server never outlives this
 * process, its temp dir goes away with it, a failed start says why — are kept by one
 * piece of code instead of three copies that drift apart.
 *
 * - The wrapper: each server runs under a tiny `sh` whose stdin is a pipe from this
 *   process. When the pipe reaches EOF — `stop()`, or this process dying in any way, even
 *   SIGKILL — the wrapper sends the server its stop signal (SIGTERM; SIGKILL for
 *   `unshare`, which blocks SIGTERM) and deletes the temp dir. That is what makes "never
 *   leak a server" hold without relying on Node's exit hooks.
 * - Servers not yet stopped are tracked for a process 'exit' hook, which only makes the
 *   same happen a little sooner.
 * - Starting: a free loopback port, the server's own greeting awaited there, and another
 *   attempt when a different process took the port in between.
 * - Stopping: the pipe closed, SIGKILL after a grace period, the temp dir removed.
 *
 * What a server runs, its config and its temp dir are the server module's business.
 */
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { rmSync, writeFileSync, readFileSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import net from 'node:net';
import tls from 'node:tls';
import os from 'node:os';
import path from 'node:path';
import type { ImapEndpoint } from '../imap/endpoint.js';

export const LAB_HOST = '127.0.0.1' as const;
const START_TIMEOUT_MS = 15_000;
const STOP_TIMEOUT_MS = 10_000;

/**
 * The server cannot run on this machine (not unpacked, not root, no mount namespaces…).
 * Tests catch exactly this to skip *with the reason printed*; any other error at start is
 * a failure.
 */
export class LabServerUnavailable extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'LabServerUnavailable';
  }
}

export interface Account {
  uid: number;
  gid: number;
  user: string;
}

/**
 * Who runs the server's mail processes. As root: `nobody` (exists everywhere, so nothing
 * in /etc/passwd has to be created — which would also race between parallel test
 * processes), or MAILFERRY_LAB_MAIL_USER. Not as root: the current user.
 */
export function labAccount(): Account {
  if (process.getuid?.() !== 0) {
    const info = os.userInfo();
    return { uid: info.uid, gid: info.gid, user: info.username };
  }
  const name = process.env.MAILFERRY_LAB_MAIL_USER ?? 'nobody';
  let entry: string;
  try {
    entry = execFileSync('getent', ['passwd', name], { encoding: 'utf8' }).trim();
  } catch {
    throw new LabServerUnavailable(`lab: mail user '${name}' does not exist (set MAILFERRY_LAB_MAIL_USER to an unprivileged user)`);
  }
  const [, , uid, gid] = entry.split(':').map(Number);
  if (!Number.isInteger(uid) || !Number.isInteger(gid) || uid === 0) throw new LabServerUnavailable(`lab: mail user '${name}' is unusable (${entry})`);
  return { uid: uid!, gid: gid!, user: name };
}

/** Server names end up in temp dir names and configs. */
export function checkServerName(name: string): void {
  if (!/^[A-Za-z0-9_-]+$/.test(name)) throw new Error(`lab: server name must be [A-Za-z0-9_-]+, got ${JSON.stringify(name)}`);
}

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.once('error', reject);
    srv.listen(0, LAB_HOST, () => {
      const addr = srv.address();
      const port = typeof addr === 'object' && addr ? addr.port : 0;
      srv.close(() => resolve(port));
    });
  });
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

export function tailFile(file: string, lines = 30): string {
  try {
    return readFileSync(file, 'utf8').split('\n').slice(-lines - 1).join('\n');
  } catch {
    return '';
  }
}

/** One attempt to read an IMAP greeting (over TLS if asked); resolves to the first line or null. */
function readGreeting(port: number, useTls: boolean, timeoutMs = 1000): Promise<string | null> {
  return new Promise((resolve) => {
    let buf = '';
    let done = false;
    const sock: net.Socket = useTls ? tls.connect({ host: LAB_HOST, port, rejectUnauthorized: false }) : net.connect({ host: LAB_HOST, port });
    const finish = (v: string | null) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      sock.destroy();
      resolve(v);
    };
    const timer = setTimeout(() => finish(null), timeoutMs);
    sock.setEncoding('latin1');
    sock.on('data', (d: string) => {
      buf += d;
      const nl = buf.indexOf('\r\n');
      if (nl >= 0) finish(buf.slice(0, nl));
    });
    sock.on('error', () => finish(null));
    sock.on('close', () => finish(null));
  });
}

/*
 * The wrapper: `sh -c WRAPPER label DIR SIGNAL cmd args…`.
 * - fd 3 keeps our stdin (the pipe from Node) for the watchdog; background jobs of a
 *   non-interactive shell would otherwise get /dev/null as stdin.
 * - The watchdog's `cat` returns at EOF: Node called stop() or died. It leaves a marker
 *   so the wrapper knows to delete the temp dir (but not after a failed start, whose log
 *   Node still wants to read and whose dir it reuses for the next port attempt), then
 *   sends the server SIGNAL.
 * - The server stays the wrapper's child until reaped, so its pid cannot be reused while
 *   Node may still signal it.
 */
const WRAPPER = `
dir=$1; sig=$2; shift 2
exec 3<&0 </dev/null
"$@" >>"$dir/startup.log" 2>&1 3<&- &
pid=$!
echo "$pid"
( cat <&3 >/dev/null 2>&1; : >"$dir/.stopping" 2>/dev/null; kill -"$sig" "$pid" 2>/dev/null ) &
watchdog=$!
exec 3<&-
wait "$pid"
status=$?
kill "$watchdog" 2>/dev/null
if [ -e "$dir/.stopping" ] && [ -z "$MAILFERRY_LAB_KEEP" ]; then
  rm -rf "$dir" 2>/dev/null || { sleep 0.3; rm -rf "$dir"; }
fi
exit $status
`;

/**
 * How the wrapper stops the server: SIGTERM, or SIGKILL for a process that ignores
 * SIGTERM and whose death alone tears everything down (`unshare --pid --fork
 * --kill-child`).
 */
export type StopSignal = 'SIGTERM' | 'SIGKILL';

export interface Running {
  child: ChildProcess;
  pid: number;
  dir: string;
  exited: Promise<number | null>;
  hasExited: boolean;
  stopSignal: StopSignal;
}

/** Servers not yet stopped, for the process 'exit' hook. */
const live = new Set<Running>();
let exitHookInstalled = false;

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  // Belt and braces: the kernel closes the wrappers' stdin when we exit anyway, which
  // already stops the servers; this only makes it happen before Node's last breath.
  process.on('exit', () => {
    for (const r of live) {
      if (r.hasExited) {
        // The server died on its own (so the wrapper did not clean up) and nobody called stop().
        if (!process.env.MAILFERRY_LAB_KEEP) rmSync(r.dir, { recursive: true, force: true });
        continue;
      }
      try {
        writeFileSync(path.join(r.dir, '.stopping'), '');
      } catch {
        // dir already gone
      }
      try {
        process.kill(r.pid, r.stopSignal);
      } catch {
        // already gone
      }
    }
  });
}

/** What to run for one start attempt. */
export interface LaunchSpec {
  command: string[];
  env: NodeJS.ProcessEnv;
  /** Default SIGTERM. */
  stopSignal?: StopSignal;
  /** A port for implicit TLS that must greet too (after the plaintext one). */
  tlsPort?: number;
}

/** Starts `command` under the wrapper, output to `dir`/startup.log; resolves once the wrapper reported its pid. */
function launchWrapped(what: string, dir: string, spec: LaunchSpec): Promise<Running> {
  const stopSignal = spec.stopSignal ?? 'SIGTERM';
  // A marker left by the previous attempt would make the wrapper delete the dir.
  rmSync(path.join(dir, '.stopping'), { force: true });
  return new Promise((resolve, reject) => {
    // `detached`: the wrapper and the server under it get a process group of their own.
    // Otherwise every lab server of every test file shares the test runner's group, and a
    // server that signals its whole group when it stops also hits the other servers'
    // processes running under the same account (`nobody`): with Cyrus or Courier servers
    // started and stopped beside it, a Dovecot test's `imap` processes said "BYE Server
    // shutting down" or vanished mid-APPEND (seen; gone once each wrapper had its group).
    const child = spawn('/bin/sh', ['-c', WRAPPER, `mailferry-lab-${what}`, dir, stopSignal.slice(3), ...spec.command], { stdio: ['pipe', 'pipe', 'ignore'], env: spec.env, detached: true });
    const exited = new Promise<number | null>((res) => child.once('exit', (code) => res(code)));
    let out = '';
    child.once('error', reject);
    child.stdout!.setEncoding('utf8');
    child.stdout!.on('data', (d: string) => {
      out += d;
      const nl = out.indexOf('\n');
      if (nl < 0) return;
      const pid = Number(out.slice(0, nl));
      child.stdout!.removeAllListeners('data');
      child.stdout!.destroy();
      if (!Number.isInteger(pid) || pid <= 0) {
        reject(new Error(`lab: unexpected wrapper output ${JSON.stringify(out)}`));
        return;
      }
      // A forgotten stop() must not keep the test process alive; the pipe's EOF at exit
      // still stops the server.
      child.unref();
      (child.stdin as unknown as net.Socket).unref?.();
      const run: Running = { child, pid, dir, exited, hasExited: false, stopSignal };
      void exited.then(() => {
        run.hasExited = true;
      });
      live.add(run);
      installExitHook();
      resolve(run);
    });
    void exited.then(() => reject(new Error(`lab: ${what} wrapper exited before starting ${what}`)));
  });
}

/** Resolves true when `p` settles within `ms`, false otherwise; leaves no timer behind. */
function within(p: Promise<unknown>, ms: number): Promise<boolean> {
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve(false), ms);
    void p.then(() => {
      clearTimeout(timer);
      resolve(true);
    });
  });
}

/** Stops the wrapped server (its stop signal via the pipe, SIGKILL after a grace period). */
async function terminateWrapped(run: Running): Promise<void> {
  // Keep the loop alive while we wait, although the child was unref'd at start.
  run.child.ref();
  run.child.stdin?.end();
  if (!(await within(run.exited, STOP_TIMEOUT_MS))) {
    // The wrapper has not reaped the server yet (it exits right after), so the pid is still ours.
    try {
      process.kill(run.pid, 'SIGKILL');
    } catch {
      // gone meanwhile
    }
    await within(run.exited, 5000);
  }
  run.child.stdin?.destroy();
  live.delete(run);
}

/** Waits until each port answers (in order) with a greeting `ours` recognises. Null when ready, else why not. */
async function waitForGreeting(run: Running, ports: { port: number; tls: boolean }[], ours: (greeting: string) => boolean, what: string): Promise<string | null> {
  const deadline = Date.now() + START_TIMEOUT_MS;
  let last: string | null = null;
  let port = ports[0]?.port;
  while (Date.now() < deadline) {
    if (run.hasExited) return `${what} exited during startup`;
    let ready = true;
    for (const g of ports) {
      port = g.port;
      last = await readGreeting(g.port, g.tls);
      if (last === null || !ours(last)) {
        ready = false;
        break;
      }
    }
    if (ready) return null;
    await sleep(40);
  }
  if (run.hasExited) return `${what} exited during startup`;
  return last === null ? `nothing answered on port ${port} within ${START_TIMEOUT_MS} ms` : `port ${port} answered with someone else's greeting: ${last}`;
}

export interface StartOptions {
  /** 'dovecot', 'cyrus', …: in messages and the wrapper's name. */
  what: string;
  /** The server's name, for messages. */
  name: string;
  /** The server's temp dir (the wrapper writes startup.log there and deletes it at stop). */
  dir: string;
  attempts: number;
  /** Writes the config of one attempt for a free loopback `port`; says what to run. */
  prepare(port: number): LaunchSpec | Promise<LaunchSpec>;
  /** Whether a greeting is this server's own (not another process's on a reused port). */
  ours(greeting: string): boolean;
  /** Logs in `dir` (besides startup.log) whose end explains a failed start. */
  logs?: string[];
  /** Another attempt only when the problem or the logs match (another process took the port). */
  retryOn: RegExp;
  /** Added to the failure message, e.g. '(Cyrus logs only to syslog)'. */
  note?: string;
}

/**
 * Launches the server on a free port until it greets there; resolves to the running
 * server, its port and the attempt that worked. After `attempts` failures, or a failure
 * that is not about the port, rejects with why and the logs' end. The temp dir is left
 * to the caller.
 */
export async function startWrapped(o: StartOptions): Promise<{ run: Running; port: number; spec: LaunchSpec }> {
  let lastError = '';
  for (let attempt = 1; attempt <= o.attempts; attempt++) {
    const port = await freePort();
    const spec = await o.prepare(port);
    const run = await launchWrapped(o.what, o.dir, spec);
    const ports = [{ port, tls: false }, ...(spec.tlsPort === undefined ? [] : [{ port: spec.tlsPort, tls: true }])];
    const problem = await waitForGreeting(run, ports, o.ours, o.what);
    if (problem === null) return { run, port, spec };
    // Read the logs first: stopping a still-running server also deletes the dir.
    const logs = ['startup.log', ...(o.logs ?? [])].map((f) => tailFile(path.join(o.dir, f))).join('\n').trim();
    lastError = `${problem}${logs ? `\n${logs}` : ''}`;
    await terminateWrapped(run);
    if (!o.retryOn.test(lastError)) break;
  }
  throw new Error(`lab: ${o.what} '${o.name}' failed to start${o.note ? ` ${o.note}` : ''}: ${lastError}`);
}

/** An idempotent stop(): stops the server, waits for it, removes its temp dir. */
export function stopOnce(run: Running): () => Promise<void> {
  let stopping: Promise<void> | null = null;
  return () => {
    stopping ??= (async () => {
      await terminateWrapped(run);
      if (!process.env.MAILFERRY_LAB_KEEP) await rm(run.dir, { recursive: true, force: true });
    })();
    return stopping;
  };
}

export interface LabServerHandle {
  host: typeof LAB_HOST;
  port: number;
  dir: string;
  endpoint(): ImapEndpoint;
  stop(): Promise<void>;
}

/** A plaintext server's endpoint() and stop(). */
export function serverHandle(run: Running, port: number): LabServerHandle {
  return {
    host: LAB_HOST,
    port,
    dir: run.dir,
    endpoint: () => ({ host: LAB_HOST, port, tls: 'none', acceptUntrustedCert: false }),
    stop: stopOnce(run),
  };
}

/** After a successful start: runs the set-up, stopping the server if it fails. */
export async function setUpOrStop<T extends { stop(): Promise<void> }>(server: T, setUp: () => Promise<void>): Promise<T> {
  try {
    await setUp();
  } catch (err) {
    await server.stop();
    throw err;
  }
  return server;
}
