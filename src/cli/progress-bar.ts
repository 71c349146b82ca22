/**
 * The terminal progress bar for `sync`: folders, messages, MB, msg/s and ETA, on stderr
 * so stdout stays clean for `--json`. Silent when stderr is not a terminal.
 */
import cliProgress from 'cli-progress';
import type { SyncProgress } from '../sync/progress.js';

export interface ProgressView {
  update(p: Readonly<SyncProgress>): void;
  stop(): void;
}

function formatDuration(seconds: number): string {
  if (!Number.isFinite(seconds) || seconds < 0) return '--';
  const s = Math.round(seconds);
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s`;
  return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`;
}

export function progressView(enabled: boolean): ProgressView {
  if (!enabled) return { update: () => undefined, stop: () => undefined };
  const bar = new cliProgress.SingleBar(
    {
      stream: process.stderr,
      format: '{phase} [{bar}] {pct} | folders {folders} | {value}/{total} msgs | {mb}/{totalMb} MB | {rate} msg/s | ETA {eta_text}',
      hideCursor: true,
      fps: 5,
      etaBuffer: 50,
    },
    cliProgress.Presets.shades_classic,
  );
  // Rates count from the first copied message: folder creation and the scan before it
  // would otherwise make the first minutes' rate (and ETA) absurd.
  let copyingSince: { at: number; copied: number; bytes: number } | null = null;
  let running = false;
  return {
    update(p) {
      if (copyingSince === null && p.copied > 0) copyingSince = { at: Date.now(), copied: p.copied, bytes: p.copiedBytes };
      const elapsed = copyingSince ? (Date.now() - copyingSince.at) / 1000 : 0;
      const rate = elapsed > 0.3 ? (p.copied - copyingSince!.copied) / elapsed : 0;
      const byteRate = elapsed > 0.3 ? (p.copiedBytes - copyingSince!.bytes) / elapsed : 0;
      // Until every folder is scanned the totals only grow: the share done and the time
      // left are lower bounds, and said to be.
      const scanning = p.foldersScanned < p.foldersTotal;
      const left = byteRate > 0 ? (p.toCopyBytes - p.copiedBytes) / byteRate : rate > 0 ? (p.toCopy - p.copied) / rate : NaN;
      const pct = p.toCopy > 0 ? Math.floor((100 * p.copied) / p.toCopy) : 0;
      const payload = {
        phase: p.phase.padEnd(10),
        folders: `${p.foldersScanned}/${p.foldersTotal}`,
        mb: (p.copiedBytes / 1048576).toFixed(1),
        totalMb: (p.toCopyBytes / 1048576).toFixed(1),
        rate: rate.toFixed(0),
        pct: scanning ? `${pct}% of those scanned` : `${pct}%`,
        eta_text: Number.isFinite(left) ? (scanning ? `> ${formatDuration(left)} (scanning)` : formatDuration(left)) : '--',
      };
      if (!running) {
        bar.start(Math.max(p.toCopy, 1), p.copied, payload);
        running = true;
      }
      bar.setTotal(Math.max(p.toCopy, 1));
      bar.update(p.copied, payload);
    },
    stop() {
      if (running) bar.stop();
    },
  };
}

/** The bar of `verify`: folders compared of all, on stderr; silent when not enabled. */
export function verifyProgressView(enabled: boolean): { update(p: { folders: number; compared: number }): void; stop(): void } {
  if (!enabled) return { update: () => undefined, stop: () => undefined };
  const bar = new cliProgress.SingleBar({ stream: process.stderr, format: 'verifying [{bar}] {value}/{total} folders', hideCursor: true, fps: 5 }, cliProgress.Presets.shades_classic);
  let running = false;
  return {
    update(p) {
      if (!running) bar.start(p.folders, 0);
      running = true;
      bar.update(p.compared);
    },
    stop() {
      if (running) bar.stop();
      running = false;
    },
  };
}
