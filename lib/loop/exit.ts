// detachOnExit: devices this process attached are detached when it exits normally or on
// SIGINT/SIGTERM. Only devices registered here are touched, never anyone else's.
import { bindingOf } from './binding';
import { detachFlow } from './detach';
import { runSync } from '../core/flow';
import type { DeviceRef } from './options';

const registered = new Set<DeviceRef>();
let installed = false;

function detachAll(): void {
  for (const device of registered) {
    try {
      runSync(detachFlow(device, { wait: false, retry: { attempts: 3, minDelayMs: 10, maxDelayMs: 50 } }));
    } catch {
      // Exiting: nothing more useful to do with the error; the others still get detached.
    }
  }
  registered.clear();
}

function onSignal(signal: NodeJS.Signals): void {
  detachAll();
  // We were the reason the default action (exit) did not happen: restore it, unless the
  // application has its own handler and decides for itself.
  if (process.listenerCount(signal) === 1) {
    process.removeListener(signal, onSignal);
    process.kill(process.pid, signal);
  }
}

function install(): void {
  if (installed) return;
  installed = true;
  process.on('exit', detachAll);
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
}

/** Detaches `device` (a handle from attach(), or any device this process attached) at exit. */
export function detachOnExit(device: DeviceRef): void {
  install();
  registered.add(device);
}

/** Stops tracking a device, e.g. after it was detached. */
export function forgetOnExit(device: DeviceRef): void {
  // Nothing registered is the usual case: no lookup then.
  if (registered.size > 0) registered.delete(device);
}

/** How many devices are registered (for tests and diagnostics). */
export function pendingOnExit(): number {
  let count = 0;
  for (const device of registered) if (!bindingOf(device)?.released) count++;
  return count;
}
