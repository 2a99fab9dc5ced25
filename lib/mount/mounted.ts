// What mount() hands back: the mount point, its device and source, and the way to unmount it
// (never what someone mounted over it since).
import { hasCode } from '../core/errors';
import { runAsync, runSync } from '../core/flow';
import type { LoopDevice } from '../loop/handle';
import { unmountFlow, type UnmountOptions, type UnmountResult } from './unmount';

/** A mounted image, as mount() returns it. */
export interface MountedImage {
  /** the mount point (absolute, symlinks resolved) */
  readonly target: string;
  /** the loop device; its handle is already closed: the mount holds the device now */
  readonly device: LoopDevice;
  /** what was mounted: /dev/loopN, or /dev/loopNpM with `partition` */
  readonly source: string;
  /** /dev/loopNpM when a partition was mounted, else null */
  readonly partitionPath: string | null;
  readonly fstype: string;
  /**
   * true when the image was already attached with the same settings (by loopdev, losetup or
   * mount(8)) and that device was mounted instead of a second one: the kernel then shares one
   * filesystem between the mount points, as mount(8) does. Such a handle never detaches the
   * device; its own autoclear, or whoever attached it, decides.
   */
  readonly reused: boolean;
  /** Unmounts it (see unmount()); refuses if another filesystem was mounted over it since. */
  unmount(options?: UnmountOptions): Promise<UnmountResult>;
  unmountSync(options?: UnmountOptions): UnmountResult;
  /** Unmounts it unless it is no longer mounted. */
  [Symbol.asyncDispose](): Promise<void>;
  [Symbol.dispose](): void;
}


/** A dispose's unmount that finds nothing mounted (unmounted already) has nothing left to do. */
export function doneIfNotMounted(error: unknown): void {
  if (!hasCode(error, 'ERR_LOOP_NOT_MOUNTED')) throw error;
}

export class Mounted implements MountedImage {
  constructor(
    readonly target: string,
    readonly device: LoopDevice,
    readonly source: string,
    readonly partitionPath: string | null,
    readonly fstype: string,
    readonly reused: boolean,
  ) {}

  unmount(options?: UnmountOptions): Promise<UnmountResult> {
    return runAsync(unmountFlow(this.target, options, this.source));
  }

  unmountSync(options?: UnmountOptions): UnmountResult {
    return runSync(unmountFlow(this.target, options, this.source));
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.unmount().catch(doneIfNotMounted);
  }

  [Symbol.dispose](): void {
    try {
      this.unmountSync();
    } catch (error) {
      doneIfNotMounted(error);
    }
  }

  toJSON(): { target: string; source: string; fstype: string; reused: boolean } {
    return { target: this.target, source: this.source, fstype: this.fstype, reused: this.reused };
  }
}
