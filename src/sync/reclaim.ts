/**
 * Returns message buffers' memory promptly. Each fetched message is a Buffer outside the
 * V8 heap; it is freed only when V8 collects its (tiny) JS object, and V8 schedules
 * collections by heap pressure, which message bytes barely create. So dead message
 * buffers piled up to ~60 MB beyond the copy budget before a collection came, and peak RSS
 * followed. Asking for a collection after every `everyBytes` copied keeps what is held
 * close to the budget; it costs a few milliseconds per call (the JS heap stays small).
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
