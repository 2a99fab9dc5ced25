// LoopDevice: the handle attach() returns.
import type { U64 } from '../core/addon';
import { kBinding, type Binding } from './binding';
import { close, closeSync, detach, detachSync, type CloseOptions, type DetachResult } from './detach';
import { info, infoSync, type LoopInfo } from './inspect';
import type { DetachOptions } from './options';
import { waitForUdev, waitForUdevSync, type UdevOptions, type UdevState } from './udev';
import { changeBacking, changeBackingSync, reconfigure, reconfigureSync, setCapacity, setCapacitySync, type ReconfigureOptions } from './change';
import type { FileHandle } from 'node:fs/promises';

/**
 * A loop device this process attached. It remembers the binding it made, so detach()
 * refuses (ERR_LOOP_REUSED) rather than clear a device someone else bound since.
 * `await using dev = await attach(img)` detaches it at the end of the block.
 */
export class LoopDevice {
  /** e.g. /dev/loop3 */
  readonly path: string;
  readonly number: number;
  /** true when the handle holds an fd on the device (hold or autoclear) */
  readonly held: boolean;
  /** how the kernel was asked: LOOP_CONFIGURE (atomic, 5.8+), LOOP_SET_FD + LOOP_SET_STATUS64, or null when `reuse` returned an existing device */
  readonly setupIoctl: 'LOOP_CONFIGURE' | 'LOOP_SET_FD' | null;
  readonly [kBinding]: Binding;

  constructor(binding: Binding) {
    this.path = binding.path;
    this.number = binding.number;
    this.held = binding.fd >= 0;
    this.setupIoctl = binding.setupIoctl;
    this[kBinding] = binding;
  }

  /** The kernel's diskseq for this binding (0 on kernels before 5.15; a bigint past 2^53). */
  get diskseq(): U64 {
    return this[kBinding].diskseq;
  }

  /** Whether this handle has detached or closed its device. */
  get released(): boolean {
    return this[kBinding].released;
  }

  /** The device's current state (see {@link LoopInfo}). */
  info(): Promise<LoopInfo> {
    return info(this);
  }

  infoSync(): LoopInfo {
    return infoSync(this);
  }

  /** Unbinds the device (see detach()). Harmless when already detached. */
  detach(options?: DetachOptions): Promise<DetachResult> {
    // The operation's own promise: an async wrapper would add turns of the microtask queue.
    return detach(this, options);
  }

  detachSync(options?: DetachOptions): DetachResult {
    return detachSync(this, options);
  }

  /**
   * Lets go of the device. A held device is closed and the kernel unbinds it at its last
   * close; any other device is detached. Either way it waits (up to `wait` ms, default 1000)
   * while someone else still has the device open for a moment (udev, blkid), not while it is
   * mounted, and `released` says whether it is gone.
   */
  close(options?: CloseOptions): Promise<DetachResult> {
    return close(this, options);
  }

  closeSync(options?: CloseOptions): DetachResult {
    return closeSync(this, options);
  }

  /** Re-reads the backing file's size (see setCapacity()). */
  setCapacity(): Promise<LoopInfo> {
    return setCapacity(this);
  }

  setCapacitySync(): LoopInfo {
    return setCapacitySync(this);
  }

  /** Changes the device in place (see reconfigure()). */
  reconfigure(changes: ReconfigureOptions): Promise<LoopInfo> {
    return reconfigure(this, changes);
  }

  reconfigureSync(changes: ReconfigureOptions): LoopInfo {
    return reconfigureSync(this, changes);
  }

  /** Swaps the backing file of a read-only device for one of the same size (see changeBacking()). */
  changeBacking(file: string | number | FileHandle): Promise<LoopInfo> {
    return changeBacking(this, file);
  }

  changeBackingSync(file: string | number | FileHandle): LoopInfo {
    return changeBackingSync(this, file);
  }

  /** Waits until udev has processed the device and its partitions (see waitForUdev()). */
  waitForUdev(options?: UdevOptions): Promise<UdevState> {
    return waitForUdev(this, options);
  }

  waitForUdevSync(options?: UdevOptions): UdevState {
    return waitForUdevSync(this, options);
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  [Symbol.dispose](): void {
    this.closeSync();
  }

  toJSON(): { path: string; number: number; held: boolean } {
    return { path: this.path, number: this.number, held: this.held };
  }
}
