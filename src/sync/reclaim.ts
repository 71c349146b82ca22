/**
 * Keeps the process's memory close to what it holds, for the peak-RSS goal (issue 2).
 *
 * Message bytes no longer make garbage (copy-lanes.ts reads them into reused slabs,
 * arena.ts, and streams large ones through reused blocks), but each chunk's JS objects
 * (parsed lines, promises, journal rows, Buffer views) live as long as the chunk's
 * fetch, journal and APPENDs, long enough to be promoted to the old generation, where V8
 * collects only when its heap limit heuristics say so: without help the heap grew from
 * ~20 to ~60 MB over a 5,000-message migration (peak RSS ~153 MB, measured with
 * bench/sync-bench.ts). A full collection after every `everyBytes` copied (the copy
 * budget, 16 MiB) keeps it near 135 MB for ~0.2 s of CPU over that run (a collection of
 * this small heap takes a few ms). Bytes outside the slabs, if any, are freed by the same
 * collections.
 */
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';

type Gc = () => void;

function loadGc(): Gc | null {
  const g = (globalThis as { gc?: Gc }).gc;
  if (g) return g;
  try {
    // Node exposes gc() only when --expose-gc is set; setting it now makes fresh contexts see it.
    setFlagsFromString('--expose-gc');
    return runInNewContext('gc') as Gc;
  } catch {
    return null;
  }
}

export class MemoryReclaimer {
  private sinceLast = 0;
  private readonly gc: Gc | null = loadGc();

  constructor(private readonly everyBytes: number) {}

  /** Notes `bytes` of message data released; collects when enough has accumulated. */
  released(bytes: number): void {
    this.sinceLast += bytes;
    if (this.sinceLast < this.everyBytes || !this.gc) return;
    this.sinceLast = 0;
    this.gc();
  }
}
