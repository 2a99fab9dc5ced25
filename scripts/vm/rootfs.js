// The guest's root filesystem: `debootstrap --variant=minbase` with the tools the suite
// spawns, the kernel's modules (so that modprobe and udev work), and an ext4 image made from
// the folder with `mke2fs -d` (no loop device on the host).
'use strict';
const { cpSync, mkdirSync, writeFileSync } = require('node:fs');
const { join } = require('node:path');

const { need, run } = require('./host');

const PACKAGES = [
  // A distribution's early boot: udevd and its rules, modprobe, systemd-tmpfiles.
  'udev',
  'kmod',
  'systemd',
  // What the suite and the library spawn: losetup, mount, blkid, partx, unshare (util-linux,
  // mount), sfdisk (fdisk), mkfs.* and debugfs/e2fsck, ps.
  'util-linux',
  'mount',
  'fdisk',
  'e2fsprogs',
  'xfsprogs',
  'btrfs-progs',
  'dosfstools',
  'squashfs-tools',
  'erofs-utils',
  'procps',
  // Networking for the package test's `npm install`.
  'iproute2',
  'ca-certificates',
  // The package test's `npm pack` runs the addon's incremental build: make, which finds it up
  // to date. No compiler: it would double the arm64 image's second stage (14 instead of about
  // 7 minutes), the cross-built tree names the cross compiler anyway, and the one test that
  // compiles (bench, with cc) cannot finish within its own time limit under emulation.
  'make',
];

// Room for the images the suite writes to /tmp (the file is sparse on the host).
const IMAGE_SIZE = '6G';

/**
 * debootstrap into `tree`. With `foreign` (another architecture) only the first stage runs
 * here; the second stage must run on the guest's own CPU (guest/second-stage.sh).
 */
async function bootstrap({ arch, release, tree, mirror, foreign, log }) {
  const args = ['--variant=minbase', `--include=${PACKAGES.join(',')}`, '--components=main', `--arch=${arch.deb}`];
  if (foreign) args.push('--foreign');
  await run(need('debootstrap', 'debootstrap'), [...args, release, tree, mirror], { log });
  // The second stage installs every package on an emulated disk: without fsync it takes
  // minutes less (guest/second-stage.sh removes this again).
  if (foreign) {
    mkdirSync(join(tree, 'etc', 'dpkg', 'dpkg.cfg.d'), { recursive: true });
    writeFileSync(join(tree, 'etc', 'dpkg', 'dpkg.cfg.d', 'loopdev-vm-unsafe-io'), 'force-unsafe-io\n');
  }
}

/** What every guest needs on top of the packages. */
function configure(tree, kernel) {
  const modules = join(tree, 'lib', 'modules', kernel.version);
  mkdirSync(modules, { recursive: true });
  cpSync(kernel.modules, modules, { recursive: true });
  // debootstrap copied the host's resolver configuration; the guest's is qemu's user network.
  writeFileSync(join(tree, 'etc', 'resolv.conf'), 'nameserver 10.0.2.3\n');
  writeFileSync(join(tree, 'etc', 'hostname'), 'loopdev-vm\n');
  writeFileSync(join(tree, 'etc', 'hosts'), '127.0.0.1\tlocalhost loopdev-vm\n::1\tlocalhost ip6-localhost ip6-loopback\n');
  // The mount point of the harness's shares.
  mkdirSync(join(tree, 'loopdev-vm'), { recursive: true });
}

async function makeImage(tree, image, log) {
  await run(need('mke2fs', 'e2fsprogs'), ['-q', '-t', 'ext4', '-L', 'loopdev-vm', '-d', tree, image, IMAGE_SIZE], { log });
}

module.exports = { PACKAGES, bootstrap, configure, makeImage, RECIPE_FILES: [join(__dirname, 'rootfs.js')] };
