/** Numbers and sizes in messages. */
import { MAX_FILE_BYTES } from './limits.js';

/** 50,001: thousands separators without toLocaleString, whose first call loads ICU data. */
export const n = (x: number) => String(x).replace(/\B(?=(\d{3})+$)/g, ',');

function mb(bytes: number): string {
  return `${(bytes / (1024 * 1024)).toFixed(1)} MB`;
}

export function tooLargeText(size: number): string {
  return `the file is ${mb(size)} (${n(size)} bytes); at most ${mb(MAX_FILE_BYTES)} is allowed: split it into several batches`;
}
