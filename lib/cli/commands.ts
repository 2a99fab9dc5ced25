// What each `loopdev` command does with the library. The library is required only when a
// command runs, so --help, --version and usage errors work even where the addon cannot load,
// and a load failure is one clean error line rather than a stack at require time.
import { readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';

import { fromNodeError, LoopError } from '../core/errors';
import type { LoopDevice } from '../loop/handle';
import type { LoopInfo } from '../loop/inspect';
import { loopNumberFromPath } from '../loop/options';
import { DEFAULT_COLUMNS, formatColumns, formatColumnsJson, printable } from './columns';
import { describeChanges, formatFailure, formatInfo, formatListJson, formatReap, loopInfoJson } from './format';
import { inFlagTerms, loopNumberOf, parseDeviceArgument, type Command } from './parse';
import { formatDissect } from './format-dissect';
import { toJson } from './json';
import { helpText } from './spec';

/** The library, loaded on first use (see the comment at the top). */
function library(): typeof import('../index') {
  return require('../index') as typeof import('../index');
}

/** Where the CLI writes; tests can pass their own. */
export interface Output {
  stdout(text: string): void;
  stderr(text: string): void;
}

/** The device's state as `info --json` prints it. */
const infoJson = (info: LoopInfo): string => toJson(loopInfoJson(info));

function version(): string {
  const pkg = JSON.parse(readFileSync(join(__dirname, '..', '..', 'package.json'), 'utf8')) as { version: string };
  return pkg.version;
}

/** Thrown by a command after it reported its own failures (for detach's many arguments). */
export class Reported extends Error {}

const HOLD_SIGNALS = ['SIGINT', 'SIGTERM', 'SIGHUP'] as const;

/**
 * Keeps the process (and so the held fd) alive until a signal, then closes the device: with
 * AUTOCLEAR the kernel unbinds it at once, or at umount if it was mounted meanwhile. If a
 * signal lands before the handlers are in, the default action kills the process and the
 * kernel frees the device all the same, as it does on SIGKILL.
 */
function holdUntilSignal(device: LoopDevice): Promise<void> {
  return new Promise((resolve, reject) => {
    const keepAlive = setInterval(() => undefined, 2 ** 30);
    const release = (): void => {
      clearInterval(keepAlive);
      for (const signal of HOLD_SIGNALS) process.removeListener(signal, release);
      device.close().then(() => resolve(), reject);
    };
    for (const signal of HOLD_SIGNALS) process.on(signal, release);
  });
}

async function attachCommand(command: Extract<Command, { name: 'attach' }>, output: Output): Promise<void> {
  const lib = library();
  const device = await lib.attach(command.image, command.options);
  try {
    output.stdout(command.json ? infoJson(await lib.info(device)) : `${device.path}\n`);
  } catch (error) {
    // Nothing may stay attached after a failed command.
    await device.detach({ wait: false }).catch(() => undefined);
    throw error;
  }
  if (command.hold) await holdUntilSignal(device);
}

/** What a DEV|IMAGE argument of detach names: a device, or an image to look devices up by. */
function detachTarget(text: string): { device: number | string } | { image: string } {
  const device = parseDeviceArgument(text);
  if (typeof device === 'number' || loopNumberFromPath(text) !== undefined) return { device };
  let stats;
  try {
    stats = statSync(text);
  } catch (error) {
    throw fromNodeError(error);
  }
  // Anything but a regular file goes to the library, which refuses what is not a loop device.
  return stats.isFile() ? { image: text } : { device: text };
}

async function detachCommand(command: Extract<Command, { name: 'detach' }>, output: Output): Promise<void> {
  const lib = library();
  let failed = false;
  const detachOne = async (device: number | string, what: string): Promise<void> => {
    try {
      const result = await lib.detach(device);
      if (!result.released) {
        output.stderr(
          `loopdev: warning: ${result.path} is still open (mounted or held by another process); ` +
            'the kernel will release it at the last close\n',
        );
      } else if (command.verbose) {
        output.stdout(`${result.path}: ${result.wasBound ? 'detached' : 'was not attached'}\n`);
      }
    } catch (error) {
      failed = true;
      output.stderr(formatFailure(`detach ${what}`, error, 'detach'));
    }
  };
  for (const text of command.targets) {
    let target;
    try {
      target = detachTarget(text);
    } catch (error) {
      failed = true;
      output.stderr(formatFailure(`detach ${text}`, error, 'detach'));
      continue;
    }
    if ('device' in target) {
      await detachOne(target.device, text);
      continue;
    }
    let devices: LoopInfo[];
    try {
      devices = await lib.find(target.image);
    } catch (error) {
      failed = true;
      output.stderr(formatFailure(`detach ${text}`, error, 'detach'));
      continue;
    }
    if (devices.length === 0 && command.verbose) output.stdout(`${text}: no loop device\n`);
    for (const info of devices) await detachOne(info.path, `${info.path} (${text})`);
  }
  if (failed) throw new Reported();
}

async function mountCommand(command: Extract<Command, { name: 'mount' }>, output: Output): Promise<void> {
  const mounted = await library().mount(command.image, command.target, command.options);
  const summary = {
    target: mounted.target,
    device: mounted.device.path,
    source: mounted.source,
    partitionPath: mounted.partitionPath,
    fstype: mounted.fstype,
    reused: mounted.reused,
  };
  if (command.json) output.stdout(toJson(summary));
  else if (command.verbose) {
    const how = mounted.reused ? `, reusing ${summary.device}, which the image was already attached to` : '';
    output.stdout(`mounted ${command.image} on ${summary.target} (${summary.source}, ${summary.fstype}${how})\n`);
  }
}

async function umountCommand(command: Extract<Command, { name: 'umount' }>, output: Output): Promise<void> {
  const result = await library().unmount(command.target, command.options);
  if (result.device !== null && !result.released) {
    const number = loopNumberOf(result.device);
    // Without AUTOCLEAR (attached by hand, then mounted) nothing will ever release it.
    const autoclear = number !== undefined && (await library().info(number).then((state) => state.autoclear, () => false));
    output.stderr(
      autoclear
        ? `loopdev: warning: ${result.device} is still open (mounted elsewhere, or in use); the kernel will release it at the last close\n`
        : `loopdev: warning: ${result.device} stays attached (it was attached without autoclear): \`loopdev detach ${result.device}\` releases it\n`,
    );
  } else if (command.verbose) {
    output.stdout(`unmounted ${result.target}${result.device === null ? '' : `; released ${result.device}`}\n`);
  }
}

/**
 * A failure of the library in the command line's terms (its messages name the API's options:
 * `sectorSize`, `directIO: 'prefer'`, `readOnly: true`), with the same code and fields.
 */
function inCommandLineTerms(error: unknown): unknown {
  if (!(error instanceof LoopError)) return error;
  const message = inFlagTerms(error.message);
  if (message === error.message) return error;
  const { code, errno, syscall, path, device, attempts, errors } = error;
  return new LoopError(message, { code, errno, syscall, path, device, attempts, errors, cause: error });
}

/** Runs one library call that changes a device; its failure is said in the flags' terms. */
async function changing(change: () => Promise<LoopInfo>): Promise<LoopInfo> {
  try {
    return await change();
  } catch (error) {
    throw inCommandLineTerms(error);
  }
}

async function setCommand(command: Extract<Command, { name: 'set' }>, output: Output): Promise<void> {
  const info = await changing(() => library().reconfigure(command.device, command.changes));
  if (command.json) output.stdout(infoJson(info));
  else if (command.verbose) output.stdout(`${info.path}: ${describeChanges(command.changes, info)}; size ${info.size} bytes\n`);
}

async function setCapacityCommand(command: Extract<Command, { name: 'set-capacity' }>, output: Output): Promise<void> {
  const info = await changing(() => library().setCapacity(command.device));
  if (command.json) output.stdout(infoJson(info));
  else if (command.verbose) output.stdout(`${info.path}: size ${info.size} bytes\n`);
}

async function changeBackingCommand(command: Extract<Command, { name: 'change-backing' }>, output: Output): Promise<void> {
  const info = await changing(() => library().changeBacking(command.device, command.file));
  if (command.json) output.stdout(infoJson(info));
  else if (command.verbose) output.stdout(`${info.path}: backed by ${printable(info.backingFile)}\n`);
}

/** add and remove: each N in turn; a failure is reported and the others are still done (exit 1). */
async function controlCommand(command: Extract<Command, { name: 'add' | 'remove' }>, output: Output): Promise<void> {
  const lib = library();
  let failed = false;
  for (const number of command.numbers) {
    const path = `/dev/loop${number}`;
    try {
      if (command.name === 'add') await lib.addDevice(number);
      else await lib.removeDevice(number);
      if (command.verbose) output.stdout(`${path}: ${command.name === 'add' ? 'created' : 'removed'}\n`);
    } catch (error) {
      failed = true;
      output.stderr(formatFailure(`${command.name} ${path}`, error, command.name));
    }
  }
  if (failed) throw new Reported();
}

async function listCommand(command: Extract<Command, { name: 'list' }>, output: Output): Promise<void> {
  const devices = await library().list();
  if (command.json) {
    // Without -O, the documented camelCase objects, as before; with it, losetup's keys.
    output.stdout(command.columns === null ? formatListJson(devices) : formatColumnsJson(devices, command.columns));
    return;
  }
  output.stdout(formatColumns(devices, command.columns ?? DEFAULT_COLUMNS, { headings: command.headings, raw: command.raw }));
}

async function reapCommand(command: Extract<Command, { name: 'reap' }>, output: Output): Promise<void> {
  const entries = await library().reap(command.options);
  output.stdout(command.json ? `${JSON.stringify(entries, null, 2)}\n` : formatReap(entries));
  const failed = entries.filter((entry) => entry.kept === 'failed');
  for (const entry of failed) output.stderr(`loopdev: reap: ${entry.path}: ${entry.keptDetail}\n`);
  if (failed.length > 0) throw new Reported();
}

/** Runs a parsed command; throws what failed (Reported when it printed its own failures). */
export async function runCommand(command: Command, output: Output): Promise<void> {
  switch (command.name) {
    case 'help':
      output.stdout(helpText(command.topic));
      return;
    case 'version':
      output.stdout(`${version()}\n`);
      return;
    case 'attach':
      return attachCommand(command, output);
    case 'detach':
      return detachCommand(command, output);
    case 'list':
      return listCommand(command, output);
    case 'info': {
      const info = await library().info(command.device);
      output.stdout(command.json ? infoJson(info) : formatInfo(info));
      return;
    }
    case 'find': {
      const devices = await library().find(command.image);
      output.stdout(command.json ? formatListJson(devices) : devices.map((info) => `${info.path}\n`).join(''));
      return;
    }
    case 'set':
      return setCommand(command, output);
    case 'set-capacity':
      return setCapacityCommand(command, output);
    case 'change-backing':
      return changeBackingCommand(command, output);
    case 'add':
    case 'remove':
      return controlCommand(command, output);
    case 'mount':
      return mountCommand(command, output);
    case 'umount':
      return umountCommand(command, output);
    case 'reap':
      return reapCommand(command, output);
    case 'dissect':
      return dissectCommand(command, output);
  }
}

async function dissectCommand(command: Extract<Command, { name: 'dissect' }>, output: Output): Promise<void> {
  const lib = library();
  switch (command.action) {
    case 'show': {
      const dissected = await lib.dissect(command.image, command.options);
      output.stdout(command.json ? toJson(dissected) : formatDissect(command.image, dissected));
      return;
    }
    case 'mount': {
      const mounted = await lib.mountImage(command.image, command.directory, command.options);
      if (command.json) {
        output.stdout(toJson({ directory: mounted.directory, device: mounted.device, mounts: mounted.mounts }));
        return;
      }
      const lines = mounted.mounts.map((mount) => `mounted ${mount.source} on ${printable(mount.target)} (${mount.fstype}, ${mount.options.join(',')})\n`);
      output.stdout(lines.join(''));
      return;
    }
    case 'umount': {
      const result = await lib.unmountImage(command.directory);
      if (command.json) {
        output.stdout(toJson(result));
        return;
      }
      output.stdout(result.unmounted.map((target) => `unmounted ${printable(target)}\n`).join(''));
      if (result.released) output.stdout(`released ${result.device}\n`);
      else output.stderr(`loopdev: warning: ${result.device} is still bound (open or mounted elsewhere); the kernel releases it at the last close\n`);
      return;
    }
  }
}
