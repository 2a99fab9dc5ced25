// The two facts of an ELF file the loader needs: the machine it was built for (a binary of
// another architecture cannot load) and the program interpreter of an executable (ld-musl-*
// or ld-linux-*: which C library the running process uses).
import { closeSync, openSync, readSync } from 'node:fs';

/** ELF e_machine of the architectures Node runs on (Node's `process.arch` names). */
export const ELF_MACHINES: Readonly<Record<string, number>> = { x64: 62, arm64: 183, arm: 40, ia32: 3, ppc64: 21, s390x: 22, riscv64: 243, loong64: 258 };

const PT_INTERP = 3;

export interface ElfFacts {
  /** e_machine (62 x86-64, 183 AArch64, see ELF_MACHINES) */
  machine: number;
  /** PT_INTERP's path; undefined for a shared object or a static executable */
  interpreter: string | undefined;
}

function readAt(fd: number, offset: number, length: number): Buffer {
  const buffer = Buffer.alloc(length);
  const got = readSync(fd, buffer, 0, length, offset);
  if (got !== length) throw new Error('truncated ELF file');
  return buffer;
}

/** Reads `file`'s ELF header and program headers; throws when it cannot be read or is not ELF. */
export function readElf(file: string): ElfFacts {
  const fd = openSync(file, 'r');
  try {
    const ident = readAt(fd, 0, 64);
    if (ident.readUInt32BE(0) !== 0x7f454c46) throw new Error('not an ELF file');
    const wide = ident[4] === 2; // ELFCLASS64
    const little = ident[5] === 1; // ELFDATA2LSB (s390x and ppc64 are big-endian)
    const u16 = (buffer: Buffer, at: number): number => (little ? buffer.readUInt16LE(at) : buffer.readUInt16BE(at));
    const u32 = (buffer: Buffer, at: number): number => (little ? buffer.readUInt32LE(at) : buffer.readUInt32BE(at));
    const word = (buffer: Buffer, at: number): number => (wide ? Number(little ? buffer.readBigUInt64LE(at) : buffer.readBigUInt64BE(at)) : u32(buffer, at));
    const machine = u16(ident, 18);
    const tableOffset = word(ident, wide ? 32 : 28);
    const entrySize = u16(ident, wide ? 54 : 42);
    const count = u16(ident, wide ? 56 : 44);
    let interpreter: string | undefined;
    if (count > 0 && entrySize > 0) {
      const table = readAt(fd, tableOffset, entrySize * count);
      for (let index = 0; index < count; index++) {
        const entry = index * entrySize;
        if (u32(table, entry) !== PT_INTERP) continue;
        const offset = word(table, entry + (wide ? 8 : 4));
        const size = word(table, entry + (wide ? 32 : 16));
        interpreter = readAt(fd, offset, Math.min(size, 4096)).toString('latin1').replace(/\0.*$/s, '');
        break;
      }
    }
    return { machine, interpreter };
  } finally {
    closeSync(fd);
  }
}

/** The `process.arch` name of an ELF machine, or 'ELF machine N' for one Node does not run on. */
export function archOfMachine(machine: number): string {
  return Object.keys(ELF_MACHINES).find((arch) => ELF_MACHINES[arch] === machine) ?? `ELF machine ${machine}`;
}
