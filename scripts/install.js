// The package's install script. It never fails an install (it always exits 0): where a
// prebuilt binary fits, it does nothing; where none fits, it builds from source if the tools
// are there, and otherwise leaves a note. Either way the loader's error (ERR_LOOP_NATIVE_LOAD)
// says at run time what is missing and the command that builds it. npm_config_build_from_source
// (`npm install --build-from-source`) asks for the source build even where a prebuilt one fits.
'use strict';
const { spawnSync } = require('node:child_process');
const { existsSync } = require('node:fs');
const { delimiter, join, resolve } = require('node:path');

const root = resolve(__dirname, '..');
const note = (text) => console.warn(`loopdev: ${text}`);

function wantsSourceBuild() {
  const value = process.env.npm_config_build_from_source ?? '';
  return value === 'true' || value.split(',').map((name) => name.trim()).includes('loopdev');
}

/** The prebuilt binary for this architecture and C library that loads, if one does. */
function loadingPrebuilt() {
  let families = ['glibc', 'musl'];
  try {
    // The loader's own answer (dist/ is in the tarball; a fresh checkout has none yet).
    const family = require(join(root, 'dist', 'core', 'libc.js')).libcFamily();
    if (family) families = [family];
  } catch {
    // both, each tried
  }
  for (const family of families) {
    const file = join(root, 'prebuilds', `linux-${process.arch}`, `loopdev.${family}.node`);
    if (!existsSync(file)) continue;
    try {
      process.dlopen({ exports: {} }, file);
      return file;
    } catch {
      // the next one
    }
  }
  return undefined;
}

/** The build tools node-gyp needs that are not on PATH. */
function missingTools() {
  const dirs = (process.env.PATH ?? '').split(delimiter).filter(Boolean);
  const onPath = (name) => dirs.some((dir) => existsSync(join(dir, name)));
  const missing = [];
  if (!onPath('python3') && !onPath('python')) missing.push('python3');
  if (!onPath('make')) missing.push('make');
  if (!(process.env.CXX && onPath(process.env.CXX)) && !onPath('g++') && !onPath('c++') && !onPath('clang++')) missing.push('a C++ compiler');
  return missing;
}

function sourceBuildCommand() {
  try {
    const { readOsRelease, sourceBuildCommand: command } = require(join(root, 'dist', 'core', 'source-build.js'));
    return command(readOsRelease());
  } catch {
    return 'install python3, make and a C++ compiler, then run npm rebuild loopdev';
  }
}

function main() {
  if (process.platform !== 'linux') {
    note(`loopdev works only on Linux (this is ${process.platform}); nothing to build`);
    return;
  }
  const fromSource = wantsSourceBuild();
  if (!fromSource && loadingPrebuilt()) return;
  const missing = missingTools();
  if (missing.length > 0) {
    const why = fromSource ? 'npm_config_build_from_source asks for a source build' : `no prebuilt binary fits linux-${process.arch} here`;
    note(`${why}, and it needs ${missing.join(', ')}. The install goes on; to build it: ${sourceBuildCommand()}`);
    return;
  }
  // `npm install` in a checkout of loopdev itself (npm's INIT_CWD is the package): a
  // development build, warnings as errors as the package's build scripts make it.
  const development = process.env.INIT_CWD !== undefined && resolve(process.env.INIT_CWD) === root;
  const build = spawnSync(process.execPath, [join(__dirname, 'build-native.js'), ...(development ? ['--werror'] : [])], { cwd: root, stdio: 'inherit' });
  if (build.status !== 0) {
    note(`the source build failed (${build.error?.message ?? (build.signal || `exit ${build.status}`)}, see above). The install goes on; loading loopdev will say what it tried.`);
  }
}

try {
  main();
} catch (error) {
  note(`install step skipped: ${error.message}`);
}
process.exit(0);
