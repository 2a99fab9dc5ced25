// What the guest sees of the host: the repository at its own absolute path (read-write), the
// Node and npm that COMMAND runs with, the Node headers the addon's Makefile names, and an
// npm cache that outlives the guest. For another architecture, its own Node, node_modules and
// addon build are mounted over the repository's, so the guest sees a consistent tree while
// the host's files stay as they are.
'use strict';
const { existsSync, mkdirSync, readFileSync, realpathSync } = require('node:fs');
const { basename, dirname, join, resolve } = require('node:path');

const { cacheRoot } = require('./cache');
const { foreignAddon, foreignNode, foreignNodeModules } = require('./foreign');
const { capture, hostNpmDir } = require('./host');

const ROOT = resolve(__dirname, '..', '..');
const NODE = '/loopdev-vm/node';
const NPM = '/loopdev-vm/npm';

/** The host has built the project (npm ci builds the addon and dist/). */
function checkHostBuild(arch) {
  const needed = ['dist/index.js', 'node_modules/.package-lock.json'];
  if (arch.name === process.arch) needed.push('build/Release/loopdev.node');
  const missing = needed.filter((file) => !existsSync(join(ROOT, file)));
  if (missing.length) {
    throw new Error(`the host has no build yet (missing ${missing.join(', ')}): run \`npm ci\` in ${ROOT} first (it builds the addon and dist/)`);
  }
}

/**
 * The Node headers directory that a build/ tree's Makefile refers to by absolute path
 * (config.gypi's nodedir): the guest must see it there, or make rebuilds everything.
 */
function headersOf(buildDir) {
  const config = join(buildDir, 'config.gypi');
  if (!existsSync(config)) return [];
  const nodedir = /"nodedir":\s*"([^"]+)"/.exec(readFileSync(config, 'utf8'))?.[1];
  const include = nodedir && join(nodedir, 'include', 'node');
  return include && existsSync(include) ? [{ host: include, guest: include, readonly: true, cached: true }] : [];
}

// Settings the guest's npm takes from the host's, so that it reaches the same registry and
// behaves as the host's does (no audit request when the host makes none). Nothing else is
// carried over: credentials stay on the host.
const NPM_SETTINGS = ['registry', 'audit', 'fund', 'update-notifier'];

/**
 * The guest's npm settings: NPM_SETTINGS as the host has them, and the host's CA file when it
 * has one (a proxy with its own CA is the usual reason), copied into the run directory.
 */
function npmSettings() {
  const npmCli = join(hostNpmDir(), 'bin', 'npm-cli.js');
  const values = Object.fromEntries(
    capture(process.execPath, [npmCli, 'config', 'get', ...NPM_SETTINGS, 'cafile'])
      .split('\n')
      .map((line) => /^([\w-]+)=(.*)$/.exec(line))
      .filter(Boolean)
      .map((match) => [match[1], match[2]]),
  );
  const lines = NPM_SETTINGS.filter((name) => values[name] !== undefined).map((name) => `${name}=${values[name]}`);
  const files = {};
  if (values.cafile && values.cafile !== 'null' && existsSync(values.cafile)) {
    files['npm-ca.crt'] = readFileSync(values.cafile);
    lines.push('cafile=/loopdev-vm/run/npm-ca.crt');
  }
  return { text: `${lines.join('\n')}\n`, files };
}

function common(nodeDir) {
  const npmCache = join(cacheRoot(), 'npm-cache');
  mkdirSync(npmCache, { recursive: true });
  return {
    cwd: ROOT,
    // `cached`: the guest keeps what it read (9p cache=loose) instead of asking the host at
    // every open and page fault. Without it, under emulation, each start of the 100 MB node
    // binary took 15-30 s and `npm --version` 16-19 s (0.6 s and 6 s with it). Only for what
    // the host does not change during a run: the repository's own files stay uncached, so
    // that both sides always see the same sources, dist/ and images.
    shares: [
      { host: ROOT, guest: ROOT, readonly: false },
      { host: nodeDir, guest: NODE, readonly: true, cached: true },
      { host: hostNpmDir(), guest: NPM, readonly: true, cached: true },
      { host: npmCache, guest: '/root/.npm', readonly: false },
    ],
    tmpfs: [],
    bin: { npm: `${NPM}/bin/npm-cli.js`, npx: `${NPM}/bin/npx-cli.js` },
    npmrc: npmSettings(),
  };
}

/** The host's architecture: its own Node, node_modules, build/ and dist/, as they are. */
function nativeLayout() {
  const node = realpathSync(process.execPath);
  const layout = common(dirname(node));
  layout.bin.node = `${NODE}/${basename(node)}`;
  layout.shares.push({ host: join(ROOT, 'node_modules'), guest: join(ROOT, 'node_modules'), readonly: false, cached: true }, ...headersOf(join(ROOT, 'build')));
  return layout;
}

async function foreignLayout(arch) {
  const nodeDir = await foreignNode(arch);
  const nodeModules = await foreignNodeModules(arch);
  const build = await foreignAddon(arch, nodeModules);
  const layout = common(nodeDir);
  layout.bin.node = `${NODE}/node`;
  layout.shares.push(
    { host: nodeModules, guest: join(ROOT, 'node_modules'), readonly: false, cached: true },
    { host: build, guest: join(ROOT, 'build'), readonly: false },
    ...headersOf(build),
  );
  // The benchmark compiles its C floors into bench/bin: the guest's binaries stay in the guest.
  layout.tmpfs.push(join(ROOT, 'bench', 'bin'));
  return layout;
}

async function guestLayout(arch) {
  checkHostBuild(arch);
  return arch.name === process.arch ? nativeLayout() : foreignLayout(arch);
}

module.exports = { guestLayout, ROOT };
