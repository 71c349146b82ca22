/**
 * What both benchmarks share: finding the CLI to measure, releasing every server, proxy,
 * child and temp dir at the end (also on error or Ctrl-C), /proc clock ticks, the load
 * average beside each figure, and small number helpers.
 */
import { type ChildProcess, spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/** package.json's bin.mailferry (the bundle an admin runs), else the compiled entry point. */
export function resolveCli(): string {
  const root = fileURLToPath(new URL('../../', import.meta.url));
  try {
    const pkg = JSON.parse(readFileSync(path.join(root, 'package.json'), 'utf8')) as { bin?: string | Record<string, string> };
    const bin = typeof pkg.bin === 'string' ? pkg.bin : pkg.bin?.mailferry;
    if (bin && existsSync(path.join(root, bin))) return path.join(root, bin);
  } catch {
    // fall back below
  }
  return fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
}

// Resources. (Lab servers also die with this process on their own: src/lab/server-process.ts.)
const resources = new Set<{ stop(): Promise<void> }>();
export const children = new Set<ChildProcess>();

export function track<T extends { stop(): Promise<void> }>(r: T): T {
  resources.add(r);
  return r;
}

export async function release(r: { stop(): Promise<void> } | undefined): Promise<void> {
  if (!r) return;
  resources.delete(r);
  await r.stop();
}

/** Everything tracked but `keep` (a server reused by the next run), newest first. */
export async function releaseAllBut(keep: { stop(): Promise<void> }): Promise<void> {
  for (const r of [...resources].reverse()) if (r !== keep) await release(r);
}

export async function releaseAll(): Promise<void> {
  for (const c of children) c.kill('SIGKILL');
  const all = [...resources].reverse();
  resources.clear();
  await Promise.allSettled(all.map((r) => r.stop()));
}

/** Clock ticks per second for /proc times (`getconf CLK_TCK`; 100 on Linux in practice). */
export const CLK_TCK = (() => {
  const r = spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' });
  const n = Number(r.stdout?.trim());
  return Number.isInteger(n) && n > 0 ? n : 100;
})();

/**
 * Starts measuring the whole machine's CPU time (all processes: the IMAP servers too, and
 * the kernel) from /proc/stat; the returned function gives the busy CPU-seconds so far
 * and the capacity (wall time × CPUs). On a small machine this tells whether a run was
 * bound by CPU (busy ≈ capacity) or by waiting. Null where /proc/stat is missing.
 */
export function machineCpu(): () => { busy: number; capacity: number } | null {
  const read = (): { busy: number; all: number } | null => {
    try {
      const f = readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/).slice(1).map(Number);
      const all = f.slice(0, 8).reduce((a, b) => a + b, 0); // user … steal; guest is inside user
      return { busy: all - f[3]! - f[4]!, all }; // idle and iowait are not busy
    } catch {
      return null;
    }
  };
  const start = read();
  return () => {
    const end = read();
    if (!start || !end) return null;
    return { busy: r2((end.busy - start.busy) / CLK_TCK), capacity: r2((end.all - start.all) / CLK_TCK) };
  };
}

/** `machineCpu()`'s figure as text: "machine busy 4.2 of 4.8 CPU-s (88%)". */
export function busyText(m: { busy: number; capacity: number } | null): string {
  return m ? `machine busy ${m.busy} of ${m.capacity} CPU-s (${Math.round((100 * m.busy) / Math.max(m.capacity, 0.01))}%)` : 'machine CPU n/a';
}

export const load1 = (): number => Number((os.loadavg()[0] ?? 0).toFixed(2));
export const r1 = (n: number): number => Math.round(n * 10) / 10;
export const r2 = (n: number): number => Math.round(n * 100) / 100;

export function median(xs: number[]): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

export function say(line: string): void {
  process.stdout.write(`${line}\n`);
}

export function tailOf(s: string, lines = 15): string {
  return s.trim().split('\n').slice(-lines).join('\n');
}

/** A whole-number option, or a usage error (`fail` prints it and exits). */
export function wholeNumber(name: string, v: string, min: number, fail: (msg: string) => never): number {
  const n = Number(v);
  if (!Number.isInteger(n) || n < min) fail(`--${name} must be a whole number >= ${min}, not "${v}"`);
  return n;
}
