// mount()'s options checked and split before anything is made: what goes to attach, what to
// mount(2), and the options that make no sense for a mount.
import { resolve } from 'node:path';

import { checkPath, invalid, optionalBoolean, optionsObject, planAttach, type AttachOptions, type AttachPlan, type BackingFile } from '../loop/options';
import { checkFsType, checkPartition, planMountFlags, type MountFlags } from './options';

const MOUNT_KEYS = ['fstype', 'partition', 'options', 'nosuid', 'nodev', 'noexec', 'mkdir'];
const ATTACH_KEYS = [
  'readOnly', 'offset', 'sizeLimit', 'partscan', 'directIO', 'sectorSize', 'inMemory', 'noFollow', 'device', 'label', 'lockControl', 'retry', 'signal', 'onRetry',
];
const NOT_FOR_MOUNT: Record<string, string> = {
  hold: 'mount() always holds the device until the mount holds it',
  autoclear: 'mount() always sets autoclear: the device goes away with the unmount',
  reuse: 'mount() always reuses a device already bound to the image with the same settings',
  detachOnExit: 'the mount holds the device, not this process: unmount it to release it',
};
const mountKeys = new Set([...MOUNT_KEYS, ...ATTACH_KEYS]);

export interface MountPlan extends MountFlags {
  image: BackingFile;
  /** absolute, not yet resolved through symlinks */
  target: string;
  fstype: string | null;
  partition: number | null;
  mkdir: boolean;
  attach: AttachOptions;
  /** the attach options checked, for the look for a device already bound to the image */
  attachPlan: AttachPlan;
  signal?: AbortSignal;
}

export function planMount(image: unknown, target: unknown, rawOptions: unknown): MountPlan {
  const options = optionsObject(rawOptions);
  for (const key of Object.keys(options)) {
    if (NOT_FOR_MOUNT[key] !== undefined) invalid(`option '${key}' is not a mount option: ${NOT_FOR_MOUNT[key]}`);
    if (!mountKeys.has(key)) invalid(`unknown mount option '${key}' (known: ${[...mountKeys].join(', ')})`);
  }
  const targetPath = resolve(checkPath(target, 'target'));
  const fstype = checkFsType(options.fstype);
  const partition = checkPartition(options.partition);
  const partscan = optionalBoolean(options, 'partscan');
  if (partition !== null && partscan === false) invalid(`option 'partition' needs partscan; do not pass 'partscan: false'`);
  const flags = planMountFlags(options);
  const attach: AttachOptions = {};
  for (const key of ATTACH_KEYS) {
    if (options[key] !== undefined) (attach as Record<string, unknown>)[key] = options[key];
  }
  attach.readOnly = flags.readOnly;
  attach.partscan = partition !== null || partscan === true;
  // AUTOCLEAR set by the same ioctl that binds, and an fd that keeps the device until the
  // mount holds it: a crash at any point leaves nothing bound.
  attach.hold = true;
  const attachPlan = planAttach(image, attach); // checks the attach options and the image argument now, before anything is made
  return {
    ...flags,
    image: image as BackingFile,
    target: targetPath,
    fstype,
    partition,
    mkdir: optionalBoolean(options, 'mkdir') ?? false,
    attach,
    attachPlan,
    signal: options.signal as AbortSignal | undefined,
  };
}
