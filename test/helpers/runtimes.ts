// Bun and Deno binaries for the package's smoke test, from their npm packages (the only
// registry these machines reach), kept in a cache outside the checkout and reused.
import { execFileSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readdirSync, renameSync, rmSync } from 'node:fs';
import { homedir, tmpdir } from 'node:os';
import { join } from 'node:path';

export interface Runtime {
  name: 'bun' | 'deno';
  /** npm package and version range */
  spec: string;
  /** the binary's path inside the package tarball */
  member: string;
}

export const RUNTIMES: Runtime[] = [
  { name: 'bun', spec: '@oven/bun-linux-x64@1.4', member: 'package/bin/bun' },
  { name: 'deno', spec: '@deno/linux-x64-glibc@2.9', member: 'package/deno' },
];

const cacheRoot = (): string => join(process.env.XDG_CACHE_HOME ?? join(homedir(), '.cache'), 'loopdev-runtimes');

/** The runtime's binary: from the cache, or fetched with `npm pack` into it (atomically). */
export function runtimeBinary(runtime: Runtime): string {
  const dir = join(cacheRoot(), runtime.spec.replace(/[@/]/g, '_'));
  const binary = join(dir, runtime.name);
  if (existsSync(binary)) return binary;
  const scratch = mkdtempSync(join(tmpdir(), `loopdev-${runtime.name}-`));
  try {
    execFileSync('npm', ['pack', '--silent', '--pack-destination', scratch, runtime.spec], { stdio: ['ignore', 'ignore', 'pipe'] });
    const tarball = readdirSync(scratch).find((name) => name.endsWith('.tgz'))!;
    execFileSync('tar', ['-xzf', join(scratch, tarball), '-C', scratch, runtime.member]);
    chmodSync(join(scratch, runtime.member), 0o755);
    mkdirSync(dir, { recursive: true });
    renameSync(join(scratch, runtime.member), binary);
  } finally {
    rmSync(scratch, { recursive: true, force: true });
  }
  return binary;
}
