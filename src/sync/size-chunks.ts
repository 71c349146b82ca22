/**
 * Groups items into runs of at most `maxBytes` by their sizes (an item larger than that
 * alone), in order: what recovery reads back from a server at once, so a folder's worth
 * of messages is never held together.
 */
export function chunkBySize<T>(items: readonly T[], sizeOf: (item: T) => number, maxBytes: number): T[][] {
  const out: T[][] = [];
  let current: T[] = [];
  let held = 0;
  for (const item of items) {
    const size = sizeOf(item);
    if (current.length && held + size > maxBytes) {
      out.push(current);
      current = [];
      held = 0;
    }
    current.push(item);
    held += size;
  }
  if (current.length) out.push(current);
  return out;
}
