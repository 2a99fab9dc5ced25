// Finding and loading the addon binary: a local build, else the prebuilt one for this
// platform and architecture that `npm pack` puts in the tarball.
import { closeSync, openSync, readSync } from 'node:fs';
import { join } from 'node:path';

import { fail } from './errors';

// ELF e_machine of the architectures Node runs on here (a binary of another one cannot load).
const ELF_MACHINES: Record<string, number> = { x64: 62, arm64: 183, arm: 40, ia32: 3, ppc64: 21, s390x: 22, riscv64: 243, loong64: 258 };

/** Why `file` cannot be this process's addon, or undefined when it may be: missing, or built for another architecture. */
function unusable(file: string): string | undefined {
  const header = Buffer.alloc(20);
  try {
    const fd = openSync(file, 'r');
    try {
      readSync(fd, header, 0, header.length, 0);
    } finally {
      closeSync(fd);
    }
  } catch {
    return 'not there';
  }
  if (header.length < 20 || header.readUInt32BE(0) !== 0x7f454c46) return 'not an ELF binary';
  const machine = header.readUInt16LE(18);
  const built = Object.keys(ELF_MACHINES).find((arch) => ELF_MACHINES[arch] === machine) ?? `ELF machine ${machine}`;
  return ELF_MACHINES[process.arch] === machine ? undefined : `built for ${built}, this is ${process.arch}`;
}

/** Loads the addon binary for this platform (see the comment above the candidates). */
export function loadAddon<T>(): T {
  if (process.platform !== 'linux') {
    fail('ERR_LOOP_NATIVE_LOAD', `loopdev works only on Linux (this is ${process.platform})`);
  }
  const arch = `${process.platform}-${process.arch}`;
  const root = join(__dirname, '..', '..');
  // A local build wins over the prebuilt binary that `npm pack` puts in the tarball (npm 11
  // blocks dependencies' install scripts, so the prebuilt one is the usual case), unless it
  // was built for another architecture (a checkout shared with an arm64 machine or guest).
  const candidates = [
    ['build', 'Release'],
    ['build', 'Debug'],
    ['prebuilds', arch],
  ];
  const tried: string[] = [];
  const usable: string[][] = [];
  for (const parts of candidates) {
    const why = unusable(join(root, ...parts, 'loopdev.node'));
    tried.push(`${parts.join('/')}/loopdev.node (${why ?? 'present'})`);
    if (why === undefined) usable.push(['module_root', ...parts, 'bindings']);
  }
  let addon: T;
  try {
    if (usable.length === 0) throw new Error('no binary for this platform');
    addon = require('bindings')({ bindings: 'loopdev.node', module_root: root, try: usable }) as T;
  } catch (error) {
    fail(
      'ERR_LOOP_NATIVE_LOAD',
      `could not load the loopdev addon for ${arch} (${(error as Error).message.split('\n')[0]}). ` +
        `Tried: ${tried.join('; ')}. ` +
        'Build it from source with `npm rebuild loopdev` (needs python3, make and a C++ compiler).',
      { cause: error },
    );
  }
  // The exports object N-API builds is in dictionary mode; every call looked its function up
  // the slow way. A plain copy has fast properties.
  return { ...addon };
}
