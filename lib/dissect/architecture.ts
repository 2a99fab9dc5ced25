// Which root and /usr partitions this machine can use: its own architecture's, then the one it
// also runs (x86 on x86-64, arm on arm64), as systemd prefers them.
import { endianness } from 'node:os';

import { describe, invalid } from '../loop/options';
import { ARCHITECTURES, type Architecture } from './partition-types';

/** The architecture a Node.js build runs, by systemd's name. */
function nativeArchitecture(): Architecture | null {
  switch (process.arch) {
    case 'x64':
      return 'x86-64';
    case 'ia32':
      return 'x86';
    case 'arm64':
      return 'arm64';
    case 'arm':
      return 'arm';
    case 'ppc64':
      return endianness() === 'LE' ? 'ppc64-le' : 'ppc64';
    case 's390x':
      return 's390x';
    case 's390':
      return 's390';
    case 'riscv64':
      return 'riscv64';
    case 'loong64':
      return 'loongarch64';
    case 'mips':
      return 'mips';
    case 'mipsel':
      return 'mips-le';
    default:
      return null;
  }
}

/** The architecture that machines of `native` also run. */
const SECONDARY: Partial<Record<Architecture, Architecture>> = { 'x86-64': 'x86', arm64: 'arm', s390x: 's390' };

/**
 * The architectures whose root and /usr partitions are used, best first: `asked` (or this
 * machine's), then its secondary one.
 */
export function architecturesFor(asked: unknown): Architecture[] {
  let native: Architecture | null;
  if (asked === undefined) {
    native = nativeArchitecture();
  } else {
    if (typeof asked !== 'string' || !(ARCHITECTURES as readonly string[]).includes(asked)) {
      invalid(`option 'architecture' must be one of ${ARCHITECTURES.join(', ')}, got ${describe(asked)}`);
    }
    native = asked as Architecture;
  }
  if (native === null) return [];
  const secondary = SECONDARY[native];
  return secondary === undefined ? [native] : [native, secondary];
}
