/**
 * Keeps the process's memory close to what it holds, for the peak-RSS goal (issue 2).
 *
 * Message bytes make no garbage (copy-lanes.ts reads them into reused slabs, arena.ts, and
 * streams large ones through reused blocks), but each chunk's JS objects (parsed lines,
 * promises, journal rows) live as long as the chunk's fetch, journal and APPENDs, long
 * enough to be promoted to the old generation, which V8 collects only when its own
 * heuristics say so.
 *
 * A full collection after every 16 MiB copied kept a 5,000-message migration's peak RSS
 * at ~118 MB, but cost ~0.5 s of its ~2.3 s of CPU (bench/sync-bench.ts, mail stores on
 * tmpfs) on a machine whose cores the IMAP servers need too. Without any, the same run
 * peaks at ~136 MB with ~36 MB of heap in use. So the collection is now a safety net:
 * after every `everyBytes` (or {@link EVERY_MESSAGES}) released, the used heap is looked
 * at (cheap), and only when it has grown past {@link HEAP_CEILING} (or past what the last
 * collection left plus {@link HEAP_GROWTH}, when that much is really live: a huge
 * folder's journal map) is a full collection forced. One check serves all the mailboxes
 * of a process (`serve` runs many), so they do not each force collections of the shared
 * heap.
 */
import { getHeapStatistics, setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';

type Gc = () => void;

const MiB = 1024 * 1024;
/** Used heap above which a collection is forced. */
const HEAP_CEILING = 40 * MiB;
/** Room above what the last forced collection left, when more than the ceiling is live. */
const HEAP_GROWTH = 24 * MiB;

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

let gc: Gc | null | undefined;
let limit = HEAP_CEILING;

/** Collects when the used heap is past the limit; returns whether it did. */
function collectIfGrown(): boolean {
  if (getHeapStatistics().used_heap_size < limit) return false;
  // Only now: a changed V8 flag set makes V8 reject a code cache made before the change
  // (the CLI's loader sets --expose-gc itself for that reason, scripts/bundle.mjs).
  gc ??= loadGc();
  if (!gc) return false;
  gc();
  limit = Math.max(HEAP_CEILING, getHeapStatistics().used_heap_size + HEAP_GROWTH);
  return true;
}

/**
 * Messages released between two looks at the heap, whatever their bytes: the garbage is
 * per message (objects), not per byte, so a mailbox of small messages made the heap grow
 * past the ceiling long before 16 MiB had gone by (`npm run bench -- --messages 60000
 * --average-size 6000`: 156 MB peak RSS; checked every 500 messages too, 149 MB).
 */
/**
 * For loops that page through a huge folder outside the copy lanes (the scan's flag and
 * expunge passes): the garbage of each page (listings, journal rows) otherwise grows the
 * heap past 200 MB before V8 collects it on its own.
 */
export function reclaimIfGrown(): void {
  collectIfGrown();
}

const EVERY_MESSAGES = 500;

export class MemoryReclaimer {
  private bytesSince = 0;
  private messagesSince = 0;

  constructor(private readonly everyBytes: number) {}

  /** Notes a chunk released; looks at the heap when enough bytes or messages have gone by. */
  released(bytes: number, messages: number): void {
    this.bytesSince += bytes;
    this.messagesSince += messages;
    if (this.bytesSince < this.everyBytes && this.messagesSince < EVERY_MESSAGES) return;
    this.bytesSince = 0;
    this.messagesSince = 0;
    collectIfGrown();
  }
}
