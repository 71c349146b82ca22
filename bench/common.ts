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
