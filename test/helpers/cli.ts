/** Runs the built `mailferry` CLI as a child process, as an admin would. */
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import type { DovecotServer } from '../../src/lab/dovecot.js';

/** The shipped entry point (the bundle `npm run build` makes), as `bin.mailferry` names it. */
export const CLI = fileURLToPath(new URL('../../mailferry.mjs', import.meta.url));

export interface CliResult {
  status: number | null;
  stdout: string;
  stderr: string;
  json: Record<string, unknown> | null;
}

export function lastJson(stdout: string): Record<string, unknown> | null {
  const line = stdout.trim().split('\n').pop();
  try {
    return line ? (JSON.parse(line) as Record<string, unknown>) : null;
  } catch {
    return null;
  }
}

/** A source and a target login on lab servers of any kind: syncArgs needs only their ports. */
export interface Logins {
  source: { port: number };
  target: { port: number };
  sourceUser: string;
  sourcePass: string;
  targetUser: string;
  targetPass: string;
}

export interface Pair extends Logins {
  source: DovecotServer;
  target: DovecotServer;
}

export function syncArgs(p: Logins, db: string, extra: string[] = [], endpoints?: { sourcePort?: number; targetPort?: number }): string[] {
  return [
    '--source', `127.0.0.1:${endpoints?.sourcePort ?? p.source.port}`, '--source-user', p.sourceUser, '--source-tls', 'none',
    '--target', `127.0.0.1:${endpoints?.targetPort ?? p.target.port}`, '--target-user', p.targetUser, '--target-tls', 'none',
    '--db', `sqlite:${db}`, ...extra,
  ];
}

export function env(p: Logins): NodeJS.ProcessEnv {
  return { ...process.env, MAILFERRY_SOURCE_PASSWORD: p.sourcePass, MAILFERRY_TARGET_PASSWORD: p.targetPass };
}

/** Runs the CLI to completion (asynchronously, so lab servers in this process keep serving). */
export function runCli(args: string[], environment: NodeJS.ProcessEnv = process.env, timeoutMs = 300_000): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CLI, ...args], { env: environment, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('error', reject);
    child.on('close', (status) => {
      clearTimeout(timer);
      resolve({ status, stdout, stderr, json: lastJson(stdout) });
    });
  });
}

export function runCliSync(args: string[], environment: NodeJS.ProcessEnv = process.env): CliResult {
  const r = spawnSync(process.execPath, [CLI, ...args], { env: environment, encoding: 'utf8' });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr, json: lastJson(r.stdout) };
}

/** A long-running `mailferry serve|worker`, its output collected. */
export interface Service {
  child: ChildProcess;
  output(): string;
  /** Resolves with the exit code (or signal name). */
  exited: Promise<number | string | null>;
}

export function startService(args: string[], env: NodeJS.ProcessEnv): Service {
  const child = spawn(process.execPath, [CLI, ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
  const exited = new Promise<number | string | null>((resolve) => child.on('close', (code, signal) => resolve(code ?? signal)));
  return { child, output: () => out, exited };
}
