// What a guest of another architecture needs from the repository besides its JavaScript:
// a Node binary for it, a node_modules installed for it (vitest's bundler has native parts)
// and the addon cross-built for it. All cached, keyed by what they are made from.
'use strict';
const { closeSync, copyFileSync, openSync, readdirSync, readFileSync, renameSync, statSync, writeFileSync } = require('node:fs');
const { join, resolve } = require('node:path');

const { crossBuild, TOOLCHAINS } = require('../cross-build');
const { cached, hashOf } = require('./cache');
const { logPath } = require('./guest');
const { capture, npm, retry, run, say } = require('./host');

const ROOT = resolve(__dirname, '..', '..');

/**
 * The npm package node-linux-<arch> of the host's Node version (its tarball has
 * package/bin/node), or the newest of the same major version if that one is not published.
 * @returns the directory holding `node`
 */
async function foreignNode(arch) {
  const version = process.versions.node;
  const dir = await cached(`node-linux-${arch.name}-v${version}`, async (tmp) => {
    const packOne = (spec) => npm(['pack', '--silent', '--pack-destination', tmp, spec], { log: 'ignore' });
    try {
      await retry(`npm pack node-linux-${arch.name}@${version}`, 3, () => packOne(`node-linux-${arch.name}@${version}`));
    } catch {
      const major = version.split('.')[0];
      say(`node-linux-${arch.name}@${version} is not available; taking the newest ${major}.x`);
      await retry(`npm pack node-linux-${arch.name}@${major}`, 3, () => packOne(`node-linux-${arch.name}@${major}`));
    }
    const tarball = readdirSync(tmp).find((name) => name.endsWith('.tgz'));
    await run('tar', ['-xzf', join(tmp, tarball), '-C', tmp, 'package/bin/node']);
    renameSync(join(tmp, 'package', 'bin', 'node'), join(tmp, 'node'));
    writeFileSync(join(tmp, 'from'), `${tarball}\n`);
  });
  return dir;
}

/** `npm ci` for the guest's CPU, in the cache, keyed by package-lock.json. */
async function foreignNodeModules(arch) {
  const lock = readFileSync(join(ROOT, 'package-lock.json'));
  const dir = await cached(`node_modules-linux-${arch.name}-${hashOf(lock)}`, async (tmp) => {
    say(`npm ci --cpu=${arch.name} (for the guest's node_modules)`);
    copyFileSync(join(ROOT, 'package.json'), join(tmp, 'package.json'));
    copyFileSync(join(ROOT, 'package-lock.json'), join(tmp, 'package-lock.json'));
    // No scripts: the project's own would build the addon (for the host) and dist/.
    await retry('npm ci', 3, () =>
      npm(['ci', `--cpu=${arch.name}`, '--os=linux', '--libc=glibc', '--ignore-scripts', '--no-audit', '--no-fund', '--loglevel=error'], { cwd: tmp }),
    );
  });
  return join(dir, 'node_modules');
}

/**
 * The addon's build/ tree for the guest, made by scripts/cross-build.js with the guest's
 * node_modules. Keyed by the sources' contents and times (make in the guest compares times:
 * a touched source must not look newer than its object), the compiler and the node_modules.
 */
async function foreignAddon(arch, nodeModules) {
  const sources = ['binding.gyp', ...readdirSync(join(ROOT, 'native')).map((name) => join('native', name))].sort();
  const key = hashOf(
    nodeModules,
    capture(`${TOOLCHAINS[arch.name]}-g++`, ['--version']),
    readFileSync(join(__dirname, '..', 'cross-build.js')),
    ...sources.flatMap((file) => [file, readFileSync(join(ROOT, file)), String(statSync(join(ROOT, file)).mtimeMs)]),
  );
  return cached(`addon-linux-${arch.name}-${key}`, async (tmp) => {
    const log = logPath(`cross-build-${arch.name}-${key}.log`);
    say(`cross-building the addon for ${arch.name}; log: ${log}`);
    const fd = openSync(log, 'w');
    try {
      await crossBuild({ arch: arch.name, buildDir: tmp, nodeModules, log: fd });
    } catch (err) {
      err.message += ` (log: ${log})`;
      throw err;
    } finally {
      closeSync(fd);
    }
  });
}

module.exports = { foreignNode, foreignNodeModules, foreignAddon };
