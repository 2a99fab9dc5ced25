// The command that builds the addon from source on the system the loader runs on, for the
// message a user reads when no binary fits: node-gyp needs python3, make and a C++ compiler,
// and the kernel's headers (<linux/loop.h>), which Alpine ships apart (linux-headers).
import { readFileSync } from 'node:fs';

const REBUILD = 'npm rebuild loopdev';

// By os-release ID (or an ID_LIKE entry): how that family installs the build tools.
const INSTALLS: ReadonlyArray<readonly [ids: readonly string[], install: string]> = [
  [['alpine'], 'apk add python3 make g++ linux-headers'],
  [['debian', 'ubuntu'], 'apt-get install -y python3 make g++'],
  [['fedora', 'rhel', 'centos', 'amzn'], 'dnf install -y python3 make gcc-c++'],
  [['suse', 'opensuse'], 'zypper install -y python3 make gcc-c++'],
  [['arch'], 'pacman -S --needed python make gcc'],
];

/** The ID and ID_LIKE words of an os-release file's text. */
function osIds(osRelease: string): string[] {
  const ids: string[] = [];
  for (const line of osRelease.split('\n')) {
    const match = /^(ID|ID_LIKE)=["']?([^"'\n]*)["']?$/.exec(line.trim());
    if (match) ids.push(...match[2]!.toLowerCase().split(/\s+/).filter(Boolean));
  }
  return ids;
}

/** The command for the system whose /etc/os-release is given (undefined: none known). */
export function sourceBuildCommand(osRelease: string | undefined): string {
  const ids = osRelease === undefined ? [] : osIds(osRelease);
  for (const id of ids) {
    const found = INSTALLS.find(([family]) => family.includes(id));
    if (found) return `${found[1]} && ${REBUILD}`;
  }
  return `install python3, make and a C++ compiler, then run ${REBUILD}`;
}

/** This system's /etc/os-release (or /usr/lib/os-release), if any. */
export function readOsRelease(): string | undefined {
  for (const file of ['/etc/os-release', '/usr/lib/os-release']) {
    try {
      return readFileSync(file, 'utf8');
    } catch {
      // the next one
    }
  }
  return undefined;
}
