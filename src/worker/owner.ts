/** A worker's name in leases: which machine and process holds a mailbox, unique per process start. */
import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';

export function workerOwnerId(): string {
  return `${hostname()}:${process.pid}:${randomBytes(3).toString('hex')}`;
}
