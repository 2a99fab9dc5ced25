// The initramfs: busybox-static (the guest's), guest/initramfs-init.sh as /init, and the kernel modules
// needed to reach the root disk and the run share, taken with their dependencies from the
// kernel's modules.dep.
'use strict';
const { readFileSync, writeFileSync } = require('node:fs');
const { basename, join } = require('node:path');
const { gzipSync } = require('node:zlib');

const { cpio } = require('./cpio');

const INIT = join(__dirname, 'guest', 'initramfs-init.sh');

// virtio over PCI (both guests use PCI devices), the disk, ext4 and the 9p share. crc32c is
// ext4's soft dependency (metadata checksums), which insmod does not follow; modprobe would.
const WANTED = ['virtio_pci', 'virtio_blk', 'crc32c_generic', 'ext4', '9pnet_virtio', '9p'];

const moduleName = (path) => basename(path).replace(/\.ko(\.\w+)?$/, '').replace(/-/g, '_');

/** Module paths in load order (dependencies first); built-in modules are left out. */
function moduleOrder(modulesDir, wanted) {
  const deps = new Map();
  for (const line of readFileSync(join(modulesDir, 'modules.dep'), 'utf8').split('\n')) {
    const [path, rest] = line.split(':');
    if (path) deps.set(moduleName(path), { path, deps: (rest ?? '').trim().split(/\s+/).filter(Boolean) });
  }
  const builtin = new Set(readFileSync(join(modulesDir, 'modules.builtin'), 'utf8').split('\n').filter(Boolean).map(moduleName));
  const order = [];
  const visit = (name) => {
    if (builtin.has(name) || order.some((m) => m.name === name)) return;
    const module = deps.get(name);
    if (!module) throw new Error(`module ${name} is neither in modules.dep nor built in`);
    // modules.dep lists the whole closure with the deepest dependencies last.
    for (const dep of [...module.deps].reverse()) visit(moduleName(dep));
    order.push({ name, path: join(modulesDir, module.path) });
  };
  wanted.forEach(visit);
  return order;
}

function buildInitramfs({ modulesDir, busybox, output }) {
  const modules = moduleOrder(modulesDir, WANTED);
  const files = [
    { name: 'bin', type: 'dir' },
    { name: 'dev', type: 'dir' },
    // The kernel opens /dev/console for /init before anything is mounted.
    { name: 'dev/console', type: 'char', mode: 0o600, rdev: [5, 1] },
    { name: 'modules', type: 'dir' },
    { name: 'bin/busybox', type: 'file', data: readFileSync(busybox) },
    { name: 'init', type: 'file', data: readFileSync(INIT) },
    { name: 'modules/order', type: 'file', mode: 0o644, data: Buffer.from(`${modules.map((m) => m.name).join('\n')}\n`) },
    ...modules.map((m) => ({ name: `modules/${m.name}.ko`, type: 'file', mode: 0o644, data: readFileSync(m.path) })),
  ];
  writeFileSync(output, gzipSync(cpio(files)));
  return modules.map((m) => m.name);
}

module.exports = { buildInitramfs, RECIPE_FILES: [join(__dirname, 'initramfs.js'), INIT, join(__dirname, 'cpio.js')] };
