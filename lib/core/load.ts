// Finding and loading the addon binary. In order: the file LOOPDEV_ADDON_PATH names (then
// nothing else); a local source build (build/Release, build/Debug); the prebuilt binary made
// for this architecture and C library that `npm pack` puts in the tarball
// (prebuilds/linux-<arch>/loopdev.<glibc|musl>.node). npm_config_build_from_source (npm's
// --build-from-source, as node-gyp-build and prebuild-install honour it) leaves the prebuilt
// ones out, so that a failed source build is reported instead of hidden.
import { join } from 'node:path';

import { archOfMachine, ELF_MACHINES, readElf } from './elf';
import { fail } from './errors';
import { describeLibc, libcFamily, type LibcFamily } from './libc';
import { readOsRelease, sourceBuildCommand } from './source-build';

/** A file the loader may take, with why it was not taken when it was not. */
export interface Candidate {
  /** the path as a message shows it (relative to the package for its own files) */
  label: string;
  file: string;
  /** why it is left out without trying it, or undefined */
  skip?: string;
}

/** What decides the candidates: the environment's two settings, the package root, the platform. */
export interface LoadSettings {
  root: string;
  arch: string;
  libc: LibcFamily | undefined;
  addonPath?: string;
  buildFromSource?: string;
}

/** Whether npm_config_build_from_source asks for this package: 'true', or a list naming it. */
function wantsSourceBuild(value: string | undefined): boolean {
  if (value === undefined || value === '' || value === 'false') return false;
  return value === 'true' || value.split(',').map((name) => name.trim()).includes('loopdev');
}

/** The files to try, in order. */
export function candidates(settings: LoadSettings): Candidate[] {
  const { root, arch } = settings;
  if (settings.addonPath) return [{ label: `LOOPDEV_ADDON_PATH=${settings.addonPath}`, file: settings.addonPath }];
  const own = (...parts: string[]): Candidate => ({ label: parts.join('/'), file: join(root, ...parts) });
  const list = [own('build', 'Release', 'loopdev.node'), own('build', 'Debug', 'loopdev.node')];
  // Unknown C library: both, glibc's first (the more common one).
  const families: LibcFamily[] = settings.libc ? [settings.libc] : ['glibc', 'musl'];
  const skip = wantsSourceBuild(settings.buildFromSource) ? 'skipped: npm_config_build_from_source is set' : undefined;
  for (const family of families) list.push({ ...own('prebuilds', `linux-${arch}`, `loopdev.${family}.node`), ...(skip ? { skip } : {}) });
  return list;
}

/** Why `file` cannot be this process's addon without trying it (missing, another architecture), or undefined. */
function unusable(file: string, arch: string): string | undefined {
  let machine: number;
  try {
    machine = readElf(file).machine;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'ENOENT' ? 'not there' : (error as Error).message;
  }
  return ELF_MACHINES[arch] === machine ? undefined : `built for ${archOfMachine(machine)}, this is ${arch}`;
}

/** What a user reads when no binary loads: what was found, what was tried, and the command that builds one. */
export function noBinaryMessage(facts: { arch: string; libc: string; tried: ReadonlyArray<readonly [label: string, why: string]>; command: string }): string {
  return [
    `no loopdev addon binary loads here: linux ${facts.arch} with ${facts.libc}.`,
    'Tried:',
    ...facts.tried.map(([label, why]) => `  ${label}: ${why}`),
    `Build it from source: ${facts.command}`,
  ].join('\n');
}

/** Loads the addon binary for this platform (see the comment at the top). */
export function loadAddon<T>(): T {
  if (process.platform !== 'linux') {
    fail('ERR_LOOP_NATIVE_LOAD', `loopdev works only on Linux (this is ${process.platform})`);
  }
  const root = join(__dirname, '..', '..');
  const libc = libcFamily();
  const settings = { root, arch: process.arch, libc, addonPath: process.env.LOOPDEV_ADDON_PATH, buildFromSource: process.env.npm_config_build_from_source };
  const tried: Array<[string, string]> = [];
  const errors: unknown[] = [];
  for (const candidate of candidates(settings)) {
    const why = candidate.skip ?? unusable(candidate.file, process.arch);
    if (why !== undefined) {
      tried.push([candidate.label, why]);
      continue;
    }
    try {
      // dlopen, not require: require takes a file not named *.node (LOOPDEV_ADDON_PATH's may
      // be) for JavaScript. A plain copy: the exports object N-API builds is in dictionary
      // mode, where every call looked its function up the slow way.
      const module = { exports: {} };
      process.dlopen(module, candidate.file);
      return { ...(module.exports as T) };
    } catch (error) {
      errors.push(error);
      tried.push([candidate.label, `did not load (${(error as Error).message.split('\n')[0]!.replace(`${candidate.file}: `, '')})`]);
    }
  }
  const message = noBinaryMessage({ arch: process.arch, libc: describeLibc(libc), tried, command: sourceBuildCommand(readOsRelease()) });
  fail('ERR_LOOP_NATIVE_LOAD', message, errors.length > 0 ? { cause: errors[0], errors } : {});
}
