// The device a step on an existing loop device works on, as the addon's Target takes it
// (native/target.h): a handle is checked there to be still its binding.
import type { Target } from '../core/addon';
import { fail } from '../core/errors';
import type { Flow } from '../core/flow';
import { bindingOf } from './binding';
import { resolveNumber } from './inspect';
import { checkPath, type DeviceRef } from './options';

export type { Target } from '../core/addon';

export function* targetOf(device: DeviceRef): Flow<Target> {
  const binding = bindingOf(device);
  if (binding !== undefined) {
    if (binding.released) fail('ERR_LOOP_NOT_ATTACHED', `${binding.path}: this handle has let go of its device`, { path: binding.path, device: binding.number });
    return [binding.number, undefined, binding.fd, true, binding.diskseq, binding.backingDevice, binding.backingInode];
  }
  const number = yield* resolveNumber(device);
  return [number, typeof device === 'string' ? checkPath(device, 'device') : undefined, -1, false, 0, 0, 0];
}
