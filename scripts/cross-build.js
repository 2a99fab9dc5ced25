// Cross-builds the addon for another architecture with Debian's cross compiler and node-gyp:
//
//   node scripts/cross-build.js --arch arm64     ->  prebuilds/linux-arm64/loopdev.glibc.node
//
// node-gyp runs at the repository's own path, in a private mount namespace where a scratch
// directory is mounted over build/ (and, for the VM harness, an arm64 node_modules over
// node_modules/), so the host's build/ is not touched. A scratch copy of binding.gyp and
// native/ elsewhere would not do for the harness: gyp's Makefile names the sources, headers
// and its own inputs by paths relative to the source tree, and the arm64 guest's `npm pack`
// runs that Makefile again at the repository's path (it must find everything up to date).
'use strict';
const { spawn, spawnSync } = require('node:child_process');
const { copyFileSync, existsSync, mkdirSync, mkdtempSync, rmSync } = require('node:fs');
const { tmpdir } = require('node:os');
const { join, resolve } = require('node:path');
const { parseArgs } = require('node:util');

const ROOT = resolve(__dirname, '..');

// Debian's cross toolchains: apt package g++-<triplet with dashes>.
const TOOLCHAINS = {
  arm64: 'aarch64-linux-gnu',
  x64: 'x86_64-linux-gnu',
};

/** The Node headers node-gyp should use: npm_config_nodedir, else the ones Debian's nodejs installs. */
function nodedir() {
  if (process.env.npm_config_nodedir) return process.env.npm_config_nodedir;
  if (existsSync('/usr/include/node/node_version.h')) return '/usr';
  return undefined; // node-gyp downloads them (needs the Node download site)
}

function toolchain(arch) {
  const triplet = TOOLCHAINS[arch];
  if (!triplet) throw new Error(`no cross toolchain known for --arch ${arch} (known: ${Object.keys(TOOLCHAINS).join(', ')})`);
  const cxx = `${triplet}-g++`;
  if (spawnSync(cxx, ['--version'], { stdio: 'ignore' }).status !== 0) {
    throw new Error(`${cxx} is missing: apt-get install g++-${triplet.replace(/_/g, '-')}`);
  }
  return { CC: `${triplet}-gcc`, CXX: cxx, LINK: cxx, AR: `${triplet}-ar` };
}

// Runs inside the namespace: $1 build dir, $2 node_modules dir or '', $3 the repository,
// $4 node, $5 node-gyp, $6 the arch. `configure` and `build` rather than `rebuild`, whose
// clean step would try to remove the mount point (the directory is fresh anyway).
// A new mount namespace copies every mount of the moment: its copies of loop-device mounts (a
// test's, running beside this build) would keep those devices bound until the build ends, so
// they are let go of first (lazily; the originals are untouched).
const IN_NAMESPACE = `set -e
awk '$0 ~ / - [^ ]+ \\/dev\\/loop/ { print $5 }' /proc/self/mountinfo | sort -r | while read -r point; do umount -l "$point" 2>/dev/null || true; done
mount --bind "$1" "$3/build"
[ -z "$2" ] || mount --bind "$2" "$3/node_modules"
cd "$3"
"$4" "$5" configure --arch="$6"
exec "$4" "$5" build`;

/**
 * Builds into `buildDir`, which then holds what node-gyp leaves in build/ (Release/loopdev.node
 * among it). `nodeModules`: a node_modules to build with instead of the repository's.
 */
function crossBuild({ arch, buildDir, nodeModules, log = 'inherit' }) {
  const env = { ...process.env, ...toolchain(arch) };
  const dir = nodedir();
  if (dir) env.npm_config_nodedir = dir;
  mkdirSync(buildDir, { recursive: true });
  // The mount points; build/ may not exist yet on a fresh checkout.
  mkdirSync(join(ROOT, 'build'), { recursive: true });
  const gyp = join(ROOT, 'node_modules', 'node-gyp', 'bin', 'node-gyp.js');
  const namespace = ['--mount', '--propagation', 'private', ...(process.getuid() === 0 ? [] : ['--map-root-user'])];
  const args = [...namespace, '--', '/bin/sh', '-c', IN_NAMESPACE, 'sh', buildDir, nodeModules ?? '', ROOT, process.execPath, gyp, arch];
  return new Promise((resolvePromise, reject) => {
    const child = spawn('unshare', args, { env, stdio: ['ignore', log, log] });
    child.on('error', reject);
    child.on('close', (code, signal) => {
      if (code === 0 && existsSync(join(buildDir, 'Release', 'loopdev.node'))) resolvePromise(join(buildDir, 'Release', 'loopdev.node'));
      else reject(new Error(`node-gyp configure --arch=${arch} && node-gyp build failed (${signal ?? `exit ${code}`})`));
    });
  });
}

async function main() {
  const { values } = parseArgs({ options: { arch: { type: 'string', default: 'arm64' } } });
  const started = Date.now();
  const scratch = mkdtempSync(join(tmpdir(), 'loopdev-cross-'));
  try {
    const addon = await crossBuild({ arch: values.arch, buildDir: join(scratch, 'build') });
    const target = join(ROOT, 'prebuilds', `linux-${values.arch}`);
    mkdirSync(target, { recursive: true });
    copyFileSync(addon, join(target, 'loopdev.glibc.node'));
    console.log(`prebuilds/linux-${values.arch}/loopdev.glibc.node (${((Date.now() - started) / 1000).toFixed(1)} s)`);
  } finally {
    rmSync(scratch, { recursive: true, force: true });
  }
}

if (require.main === module) {
  main().catch((err) => {
    console.error(err.message);
    process.exit(1);
  });
}

module.exports = { crossBuild, TOOLCHAINS };
