export { attach, attachSync } from './attach';
export { detach, detachSync, type DetachResult } from './detach';
export { info, infoSync, list, listSync, find, findSync, type LoopInfo, type PartitionInfo } from './inspect';
export { LoopDevice } from './device';
export { LoopError, type LoopErrorCode } from './errors';
export { addDevice, addDeviceSync, removeDevice, removeDeviceSync, type RemoveOptions } from './control';
export { detachOnExit } from './exit';
export type { AttachOptions, DetachOptions, BackingFile, DeviceRef } from './options';
export type { RetryOptions, RetryEvent, RetryHook } from './retry';
