// What a LoopDevice remembers about the binding it made, so that it can release exactly
// that binding and never a stranger's device that later took the same number.
import type { U64 } from '../core/addon';
import type { PartitionEntry } from '../partitions/table';

export const kBinding = Symbol('loopdev.binding');

export interface Binding {
  readonly number: number;
  readonly path: string;
  /** the held device fd (owned by the addon), or -1; a step that closes it takes it first (sets -1) */
  fd: number;
  /** 0 when the kernel has no diskseq; then backing device and inode identify the binding (a change of the device may give it a new one) */
  diskseq: U64;
  /** the backing file's st_dev and st_ino (changeBacking() moves them to the new file) */
  backingDevice: U64;
  backingInode: U64;
  /** partitions this library added with BLKPG, deleted again before LOOP_CLR_FD */
  partitions: PartitionEntry[];
  released: boolean;
  /** PARTSCAN is set: the kernel drops the device's partitions when it unbinds it */
  partscan: boolean;
  /** registered to be detached at this thread's end (see exit.ts): a change registers it again */
  detachOnExit?: boolean;
  /** the ioctl that bound it; null for a device found by reuse, bound by someone else */
  readonly setupIoctl: 'LOOP_CONFIGURE' | 'LOOP_SET_FD' | null;
}

export function bindingOf(value: unknown): Binding | undefined {
  return typeof value === 'object' && value !== null ? (value as { [kBinding]?: Binding })[kBinding] : undefined;
}
