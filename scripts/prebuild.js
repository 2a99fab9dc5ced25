// Runs before `npm pack`: puts the N-API binaries into prebuilds/<platform>-<arch>/ so that the
// tarball works where npm blocks install scripts (npm 11's default for dependencies): this
// machine's build, and the other architecture's, cross-built with Debian's cross compiler when
// it is installed (g++-aarch64-linux-gnu on x64). N-API keeps a binary valid across Node
// versions (NAPI_VERSION 8: Node >= 12.22).
'use strict';
const { spawnSync } = require('node:child_process');
const { copyFileSync, existsSync, mkdirSync } = require('node:fs');
const { join } = require('node:path');

const root = join(__dirname, '..');

function place(arch, binary) {
  const target = join(root, 'prebuilds', `linux-${arch}`);
  mkdirSync(target, { recursive: true });
  copyFileSync(binary, join(target, 'loopdev.glibc.node'));
  console.log(`prebuilt binary: prebuilds/linux-${arch}/loopdev.glibc.node`);
}

place(process.arch, join(root, 'build', 'Release', 'loopdev.node'));

const { TOOLCHAINS } = require('./cross-build');
for (const arch of Object.keys(TOOLCHAINS)) {
  if (arch === process.arch) continue;
  const cxx = `${TOOLCHAINS[arch]}-g++`;
  if (spawnSync(cxx, ['--version'], { stdio: 'ignore' }).status !== 0) {
    // A developer's pack without the cross compiler still works; CI installs it.
    const present = existsSync(join(root, 'prebuilds', `linux-${arch}`, 'loopdev.glibc.node')) ? ' (keeping the one in prebuilds/)' : '';
    console.warn(`prebuild: no ${cxx}: the tarball has no linux-${arch} binary unless one was built before${present}`);
    continue;
  }
  const result = spawnSync(process.execPath, [join(__dirname, 'cross-build.js'), '--arch', arch], { stdio: 'inherit' });
  if (result.status !== 0) process.exit(result.status ?? 1);
}
