// What differs between the guests: one entry per architecture.
'use strict';
const { existsSync } = require('node:fs');

const ARCHES = {
  x64: {
    deb: 'amd64',
    qemu: 'qemu-system-x86_64',
    qemuPackage: 'qemu-system-x86',
    // i440fx is the simplest machine with PCI; `max` gives Node the instruction set it
    // expects (the default qemu64 model lacks SSE4 and friends).
    machine: ['-M', 'pc'],
    cpu: 'max',
    console: 'ttyS0',
  },
  arm64: {
    deb: 'arm64',
    qemu: 'qemu-system-aarch64',
    qemuPackage: 'qemu-system-arm',
    machine: ['-M', 'virt'],
    cpu: 'cortex-a57',
    console: 'ttyAMA0',
  },
};

function archInfo(name) {
  const arch = ARCHES[name];
  if (!arch) throw new Error(`unknown --arch ${name} (known: ${Object.keys(ARCHES).join(', ')})`);
  // KVM only runs a guest of the host's own architecture; anything else is emulated.
  const kvm = name === process.arch && existsSync('/dev/kvm');
  return { name, ...arch, kvm, cpu: kvm ? 'host' : arch.cpu, accel: kvm ? 'kvm' : 'tcg' };
}

module.exports = { archInfo, ARCH_NAMES: Object.keys(ARCHES) };
