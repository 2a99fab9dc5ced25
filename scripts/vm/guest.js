// A bootable guest in the cache: kernel, initramfs and root filesystem image, built together
// (the image carries the kernel's modules) and keyed by everything that goes into them.
'use strict';
const { chmodSync, closeSync, copyFileSync, existsSync, mkdirSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } = require('node:fs');
const { tmpdir } = require('node:os');
const { join } = require('node:path');

const { debianMirror, privateApt } = require('./apt');
const { cached, cacheRoot, hashOf, removeTree } = require('./cache');
const { say } = require('./host');
const initramfs = require('./initramfs');
const { fetchBusybox, fetchKernel } = require('./kernel');
const { boot } = require('./qemu');
const rootfs = require('./rootfs');

const SECOND_STAGE = join(__dirname, 'guest', 'second-stage.sh');
const RECIPE_FILES = [
  join(__dirname, 'guest.js'),
  SECOND_STAGE,
  join(__dirname, 'apt.js'),
  join(__dirname, 'kernel.js'),
  ...rootfs.RECIPE_FILES,
  ...initramfs.RECIPE_FILES,
];

function guestKey(arch, release) {
  const recipe = RECIPE_FILES.map((file) => readFileSync(file));
  return hashOf(arch.name, release, rootfs.PACKAGES.join(' '), ...recipe);
}

function logPath(name) {
  const dir = join(cacheRoot(), 'logs');
  mkdirSync(dir, { recursive: true });
  return join(dir, name);
}

/** Boots the half-made foreign image once to run debootstrap's second stage in it. */
async function secondStage(arch, release, dir, key) {
  const runDir = mkdtempSync(join(tmpdir(), 'loopdev-vm-build-'));
  const consoleLog = logPath(`second-stage-${arch.name}-${release}-${key}.log`);
  try {
    copyFileSync(SECOND_STAGE, join(runDir, 'init.sh'));
    chmodSync(join(runDir, 'init.sh'), 0o755);
    say(`running debootstrap's second stage in the ${arch.name} guest (about 8 minutes under emulation); console: ${consoleLog}`);
    const started = Date.now();
    const result = await boot({
      arch,
      guest: { vmlinuz: join(dir, 'vmlinuz'), initrd: join(dir, 'initrd.img'), image: join(dir, 'rootfs.img') },
      snapshot: false,
      append: { init: '/loopdev-vm/run/init.sh', extra: [] },
      runDir,
      shares: [],
      consoleLog,
      timeoutSeconds: 3600,
    });
    const status = existsSync(join(runDir, 'status')) ? readFileSync(join(runDir, 'status'), 'utf8').trim() : null;
    if (status !== '0') {
      throw new Error(`debootstrap's second stage failed (${result.timedOut ? 'timed out' : `status ${status ?? 'none'}`}); see ${consoleLog}\n${result.qemuStderr}`);
    }
    say(`second stage done in ${Math.round((Date.now() - started) / 1000)} s`);
  } finally {
    rmSync(runDir, { recursive: true, force: true });
  }
}

async function build(arch, release, dir, key) {
  const log = logPath(`build-${arch.name}-${release}-${key}.log`);
  const fd = openSync(log, 'w');
  const started = Date.now();
  say(`building the ${arch.name} guest (Debian ${release}); log: ${log}`);
  try {
    const work = join(dir, 'work');
    mkdirSync(work);
    const apt = await privateApt(join(work, 'apt'), arch.deb, release);
    const kernel = await fetchKernel(arch, apt, work);
    const busybox = await fetchBusybox(apt, work);
    const tree = join(work, 'root');
    const foreign = arch.name !== process.arch;
    say(`debootstrap${foreign ? ' (first stage)' : ''} of ${rootfs.PACKAGES.length} packages and their dependencies`);
    await rootfs.bootstrap({ arch, release, tree, mirror: debianMirror(release), foreign, log: fd });
    rootfs.configure(tree, kernel);
    const modules = initramfs.buildInitramfs({ modulesDir: kernel.modules, busybox, output: join(dir, 'initrd.img') });
    copyFileSync(kernel.vmlinuz, join(dir, 'vmlinuz'));
    await rootfs.makeImage(tree, join(dir, 'rootfs.img'), fd);
    removeTree(work);
    if (foreign) await secondStage(arch, release, dir, key);
    const manifest = { arch: arch.name, suite: release, kernel: kernel.version, kernelPackage: kernel.pkg, initramfsModules: modules, packages: rootfs.PACKAGES, built: new Date().toISOString() };
    writeFileSync(join(dir, 'manifest.json'), `${JSON.stringify(manifest, null, 2)}\n`);
    say(`the ${arch.name} guest is built (${Math.round((Date.now() - started) / 1000)} s): kernel ${kernel.version}`);
  } catch (err) {
    err.message += `\n(build log: ${log})`;
    throw err;
  } finally {
    closeSync(fd);
  }
}

/** The guest for `arch` and Debian `release`, built first if the cache has none for the current recipe. */
async function ensureGuest(arch, release) {
  const key = guestKey(arch, release);
  const dir = await cached(`guest-${arch.name}-${release}-${key}`, (tmp) => build(arch, release, tmp, key));
  const manifest = JSON.parse(readFileSync(join(dir, 'manifest.json'), 'utf8'));
  return { dir, key, manifest, vmlinuz: join(dir, 'vmlinuz'), initrd: join(dir, 'initrd.img'), image: join(dir, 'rootfs.img') };
}

module.exports = { ensureGuest, logPath };
