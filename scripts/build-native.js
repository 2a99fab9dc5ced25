// Builds the addon from source with node-gyp: `configure` when there is no build/ yet,
// then an incremental `build` (so `npm test` after an edit to native/ rebuilds only that).
// With --if-needed (the package's install script) nothing is built when a prebuilt binary
// for this platform loads, which is the case for installs from the npm tarball.
'use strict';
const { execFileSync } = require('node:child_process');
const { existsSync } = require('node:fs');
const { join } = require('node:path');

const root = join(__dirname, '..');

function prebuiltLoads() {
  const file = join(root, 'prebuilds', `${process.platform}-${process.arch}`, 'loopdev.node');
  if (!existsSync(file)) return false;
  try {
    require(file);
    return true;
  } catch {
    return false;
  }
}

function nodeGyp() {
  const local = join(root, 'node_modules', 'node-gyp', 'bin', 'node-gyp.js');
  if (existsSync(local)) return local;
  // npm points this at the node-gyp it bundles.
  if (process.env.npm_config_node_gyp && existsSync(process.env.npm_config_node_gyp)) return process.env.npm_config_node_gyp;
  throw new Error('node-gyp not found: install it (npm install -g node-gyp) to build loopdev from source');
}

if (process.argv.includes('--if-needed') && prebuiltLoads()) process.exit(0);
const gyp = nodeGyp();
const run = (...args) => execFileSync(process.execPath, [gyp, ...args], { cwd: root, stdio: 'inherit' });
if (process.argv.includes('--clean') || !existsSync(join(root, 'build', 'config.gypi'))) run('configure');
run('build');
