// An arm64 musl sysroot for qemu-user, made from Debian's arm64 packages without touching the
// host's dpkg: musl's loader and libc (musl) and, as the C++ runtime Bun's musl build wants,
// Debian's arm64 libstdc++ and libgcc_s (libstdc++6, libgcc-s1). They are fetched by the arm64
// guest's private apt (scripts/vm/apt.js: its own state and lists, the mirror read from the
// host's apt configuration), unpacked with dpkg-deb, and kept in the guests' cache
// (scripts/vm/cache.js: ~/.cache/loopdev-vm, LOOPDEV_VM_CACHE), reused when present.
import { execFileSync } from 'node:child_process';
import { mkdirSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';

// CommonJS scripts (untyped).
const load = createRequire(__filename);
const { DEFAULT_RELEASE, privateApt } = load('../../scripts/vm/apt.js') as {
  DEFAULT_RELEASE: string;
  privateApt: (dir: string, debArch: string, release: string) => Promise<{ download: (pkg: string, dest: string) => Promise<string> }>;
};
const { cached, hashOf } = load('../../scripts/vm/cache.js') as {
  cached: (name: string, build: (tmp: string) => Promise<void>) => Promise<string>;
  hashOf: (...parts: string[]) => string;
};

export const ARM64_MUSL_PACKAGES = ['musl', 'libstdc++6', 'libgcc-s1'];

/**
 * The sysroot's directory: `root/` holds the unpacked packages (lib/ld-musl-aarch64.so.1,
 * usr/lib/aarch64-linux-gnu/libstdc++.so.6, lib/aarch64-linux-gnu/libgcc_s.so.1) and
 * `packages.txt` the .debs they came from.
 */
export function arm64MuslSysroot(): Promise<string> {
  return cached(`musl-sysroot-arm64-${hashOf(DEFAULT_RELEASE, ...ARM64_MUSL_PACKAGES)}`, async (tmp) => {
    const apt = await privateApt(join(tmp, 'apt'), 'arm64', DEFAULT_RELEASE);
    const debs = join(tmp, 'debs');
    mkdirSync(debs);
    mkdirSync(join(tmp, 'root'));
    for (const pkg of ARM64_MUSL_PACKAGES) {
      execFileSync('dpkg-deb', ['-x', await apt.download(pkg, debs), join(tmp, 'root')]);
    }
    writeFileSync(join(tmp, 'packages.txt'), `${readdirSync(debs).sort().join('\n')}\n`);
    rmSync(debs, { recursive: true });
    rmSync(join(tmp, 'apt'), { recursive: true });
  });
}
