// The stock Debian kernel for a guest: the meta package (linux-image-amd64, linux-image-arm64)
// resolved to the real one (linux-image-6.1.0-N-<arch>), downloaded and unpacked with
// `dpkg -x`. Nothing is installed on the host. The package ships no modules.dep (its postinst
// runs depmod), so depmod runs here, on the unpacked tree. From trixie on (merged /usr), the
// packages put modules and busybox under /usr.
'use strict';
const { existsSync, mkdirSync, readdirSync } = require('node:fs');
const { join } = require('node:path');

const { need, run, say } = require('./host');

/** @param apt a privateApt() for the guest's architecture */
async function fetchKernel(arch, apt, dir) {
  const meta = `linux-image-${arch.deb}`;
  const pkg = /^(linux-image-[^\s,(]+)/.exec(apt.depends(meta))?.[1];
  if (!pkg) throw new Error(`cannot resolve ${meta} to a kernel package`);
  say(`kernel: ${pkg} (from ${meta})`);
  const debs = join(dir, 'debs');
  mkdirSync(debs, { recursive: true });
  const deb = await apt.download(pkg, debs);
  const tree = join(dir, 'kernel');
  await run('dpkg', ['-x', deb, tree]);
  const image = readdirSync(join(tree, 'boot')).find((name) => name.startsWith('vmlinuz-'));
  if (!image) throw new Error(`${pkg} has no /boot/vmlinuz-*`);
  const version = image.slice('vmlinuz-'.length);
  // depmod -b BASE looks in BASE/lib/modules (and, when its own build says so, BASE/usr/lib/modules).
  const base = existsSync(join(tree, 'lib', 'modules', version)) ? tree : join(tree, 'usr');
  await run(need('depmod', 'kmod'), ['-b', base, version]);
  return { pkg, version, vmlinuz: join(tree, 'boot', image), modules: join(base, 'lib', 'modules', version) };
}

/** The guest architecture's busybox-static, for the initramfs. */
async function fetchBusybox(apt, dir) {
  const debs = join(dir, 'debs');
  mkdirSync(debs, { recursive: true });
  const tree = join(dir, 'busybox');
  await run('dpkg', ['-x', await apt.download('busybox-static', debs), tree]);
  const busybox = ['bin', 'usr/bin'].map((dir) => join(tree, dir, 'busybox')).find((file) => existsSync(file));
  if (!busybox) throw new Error('busybox-static has no bin/busybox or usr/bin/busybox');
  return busybox;
}

module.exports = { fetchKernel, fetchBusybox };
