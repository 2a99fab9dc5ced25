// Runs before `npm pack`: makes the four prebuilt binaries the tarball carries
// (prebuilds/linux-{x64,arm64}/loopdev.{glibc,musl}.node) with zig's cross compiler (see
// zig-build.js), so that installs need no compiler and no install script on any of them.
// Whatever was in prebuilds/ before goes first: a stale binary is never packed. When one
// cannot be made, the pack fails and says which and why.
'use strict';
const { rmSync } = require('node:fs');
const { join } = require('node:path');

const { TARGETS, build, zig } = require('./zig-build');

const root = join(__dirname, '..');
rmSync(join(root, 'prebuilds'), { recursive: true, force: true });

let zigBinary;
try {
  zigBinary = zig();
} catch (error) {
  console.error(`prebuild: none of the four binaries (${Object.keys(TARGETS).join(', ')}) can be made: no zig (${error.message})`);
  process.exit(1);
}
const failed = [];
for (const name of Object.keys(TARGETS)) {
  const started = Date.now();
  try {
    const file = build(name, { zigBinary });
    console.log(`prebuilt binary: ${file.slice(root.length + 1)} (${((Date.now() - started) / 1000).toFixed(1)} s)`);
  } catch (error) {
    failed.push(`${name}: ${error.message}`);
  }
}
if (failed.length > 0) {
  rmSync(join(root, 'prebuilds'), { recursive: true, force: true });
  console.error(`prebuild: the tarball would miss binaries, so nothing is packed:\n  ${failed.join('\n  ')}`);
  process.exit(1);
}
