// Builds the addon from source with node-gyp: `configure` when there is no build/ yet,
// then an incremental `build` (so `npm test` after an edit to native/ rebuilds only that).
// The package's install script (scripts/install.js) runs it where no prebuilt binary fits.
// With --werror (the package's own build scripts) or LOOPDEV_WERROR=1 (CI) warnings are
// errors; never in a user's build, where a newer compiler may warn about what was clean here.
'use strict';
const { execFileSync } = require('node:child_process');
const { existsSync, readFileSync } = require('node:fs');
const { join } = require('node:path');

const root = join(__dirname, '..');

function nodeGyp() {
  const local = join(root, 'node_modules', 'node-gyp', 'bin', 'node-gyp.js');
  if (existsSync(local)) return local;
  // npm points this at the node-gyp it bundles.
  if (process.env.npm_config_node_gyp && existsSync(process.env.npm_config_node_gyp)) return process.env.npm_config_node_gyp;
  throw new Error('node-gyp not found: install it (npm install -g node-gyp) to build loopdev from source');
}

/** Whether build/ was configured with -Werror; undefined when it was not configured. */
function configuredWerror() {
  if (!existsSync(join(root, 'build', 'config.gypi'))) return undefined;
  try {
    return readFileSync(join(root, 'build', 'loopdev.target.mk'), 'utf8').includes('-Werror');
  } catch {
    return undefined;
  }
}

const gyp = nodeGyp();
const run = (...args) => execFileSync(process.execPath, [gyp, ...args], { cwd: root, stdio: 'inherit' });
const werror = process.argv.includes('--werror') || process.env.LOOPDEV_WERROR === '1';
// gyp writes the flags into build/*.mk at configure, so a build configured the other way
// (an `npm ci` install build before a development build) is configured again.
if (process.argv.includes('--clean') || configuredWerror() !== werror) run('configure', '--', `-Dloopdev_werror=${werror ? 1 : 0}`);
run('build');
