// detachOnExit: the addon keeps, per thread, the devices to detach when the thread's Node
// environment is torn down (a worker that ends or is terminated, a main thread whose event
// loop ran dry), where no JavaScript of the thread runs any more (native/exit.h). An attach
// with the option is registered by the step that delivers it. process.exit() on the main
// thread ends the process without that teardown, and so does the default action of SIGINT
// and SIGTERM: the handlers here detach the registered devices then. Only devices this
// thread registered, and only while they are still the binding it registered, are touched.
import { addon, packPartitions } from '../core/addon';
import { call, runSync, type Flow } from '../core/flow';
import { bindingOf } from './binding';
import type { DeviceRef } from './options';
import { targetOf } from './target';

let installed = false;

function cleanUpNow(): void {
  try {
    addon.exitCleanup.sync();
  } catch {
    // Exiting: nothing more useful to do with the error.
  }
}

function onSignal(signal: NodeJS.Signals): void {
  cleanUpNow();
  // We were the reason the default action (exit) did not happen: restore it, unless the
  // application has its own handler and decides for itself.
  if (process.listenerCount(signal) === 1) {
    process.removeListener(signal, onSignal);
    process.kill(process.pid, signal);
  }
}

/** Installs the handlers for the ends of the process that skip the environment's teardown. */
export function watchExit(): void {
  if (installed) return;
  installed = true;
  process.on('exit', cleanUpNow);
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
}

/**
 * Detaches `device` (a handle from attach(), or any bound device: path or number) when this
 * thread ends or the process exits, as long as it is still the binding it is now.
 * ERR_LOOP_NOT_ATTACHED when it is not bound.
 */
export function detachOnExit(device: DeviceRef): void {
  watchExit();
  const binding = bindingOf(device);
  runSync(registerFlow(device));
  if (binding !== undefined) binding.detachOnExit = true;
}

/** A registered handle's device after a change: registered again as the binding it is now (a change may give it a new diskseq, or file). */
export function* followOnExit(device: DeviceRef): Flow<void> {
  const binding = bindingOf(device);
  if (binding?.detachOnExit) yield* registerFlow(device);
}

function* registerFlow(device: DeviceRef): Flow<void> {
  yield* call(addon.registerOnExit, ...(yield* targetOf(device)), packPartitions(bindingOf(device)?.partitions ?? []));
}
