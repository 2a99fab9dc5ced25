// The stock Debian kernel for a guest: the meta package (linux-image-amd64, linux-image-arm64)
// resolved to the real one (linux-image-6.1.0-N-<arch>), downloaded and unpacked with
// `dpkg -x`. Nothing is installed on the host. The package ships no modules.dep (its postinst
// runs depmod), so depmod runs here, on the unpacked tree.
'use strict';
const { mkdirSync, readdirSync } = require('node:fs');
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
  await run(need('depmod', 'kmod'), ['-b', tree, version]);
  return { pkg, version, vmlinuz: join(tree, 'boot', image), modules: join(tree, 'lib', 'modules', version) };
}

/** The guest architecture's busybox-static, for the initramfs. */
async function fetchBusybox(apt, dir) {
  const debs = join(dir, 'debs');
  mkdirSync(debs, { recursive: true });
  const tree = join(dir, 'busybox');
  await run('dpkg', ['-x', await apt.download('busybox-static', debs), tree]);
  return join(tree, 'bin', 'busybox');
}

module.exports = { fetchKernel, fetchBusybox };
