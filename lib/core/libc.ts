// Which C library this process runs on, to take the prebuilt binary made for it, without a
// dependency. The ELF interpreter of the running executable (ld-musl-* or ld-linux-*) costs a
// few reads at every load; process.report answers for glibc too, but a report takes ~60 ms
// here, so it is asked only when the interpreter says nothing (a static executable) and for
// glibc's version in an error message. /etc/alpine-release is the last resort.
import { existsSync, readFileSync } from 'node:fs';

import { readElf } from './elf';

export type LibcFamily = 'glibc' | 'musl';

/** glibc's version from Node's diagnostic report (absent on musl builds of Node and elsewhere). */
export function glibcVersion(): string | undefined {
  try {
    const report = process.report?.getReport() as { header?: { glibcVersionRuntime?: unknown } } | undefined;
    const version = report?.header?.glibcVersionRuntime;
    return typeof version === 'string' ? version : undefined;
  } catch {
    return undefined;
  }
}

/** The C library's family from an executable's program interpreter, when its name says it. */
export function familyOfInterpreter(interpreter: string | undefined): LibcFamily | undefined {
  if (interpreter === undefined) return undefined;
  if (/\/ld-musl-[^/]*$/.test(interpreter)) return 'musl';
  // ld-linux-x86-64.so.2, ld-linux-aarch64.so.1, ld-linux.so.2, ld64.so.2 (ppc64), ld64.so.1 (s390x)
  if (/\/ld(64)?(-linux[^/]*)?\.so\.\d+$/.test(interpreter)) return 'glibc';
  return undefined;
}

let known: LibcFamily | null | undefined;

/** This process's C library, or undefined when nothing says which. */
export function libcFamily(): LibcFamily | undefined {
  if (known !== undefined) return known ?? undefined;
  let family: LibcFamily | undefined;
  try {
    family = familyOfInterpreter(readElf(process.execPath).interpreter);
  } catch {
    family = undefined; // an unreadable executable: the other two ways decide
  }
  family ??= glibcVersion() !== undefined ? 'glibc' : existsSync('/etc/alpine-release') ? 'musl' : undefined;
  known = family ?? null;
  return family;
}

/** The C library in words, for messages: 'glibc 2.36', 'musl (Alpine 3.21.0)', 'an unknown C library'. */
export function describeLibc(family: LibcFamily | undefined = libcFamily()): string {
  if (family === 'glibc') return `glibc ${glibcVersion() ?? '(version unknown)'}`;
  if (family === 'musl') {
    // musl has no call that returns its version; Alpine's release names it.
    let release: string | undefined;
    try {
      release = readFileSync('/etc/alpine-release', 'utf8').trim();
    } catch {
      release = undefined;
    }
    return release ? `musl (Alpine ${release})` : 'musl';
  }
  return 'an unknown C library';
}
