'use strict';
// The libraries under test (--lib, and --vs for a second one), the cycle every section makes
// with them, and the same cycle made by calling a library's addon directly.

const path = require('node:path');

const { state } = require('./state');

const ROOT = path.resolve(__dirname, '..', '..');

/** A path relative to the checkout when it lies inside it. */
function libName(file) {
  const relative = path.relative(ROOT, file);
  return relative.startsWith('..') ? file : relative;
}

/**
 * Loads a library's dist/index.js; with `withAddon`, also the addon module it loaded
 * (dist/core/addon.js: the functions and their result layouts), for the rows that call it directly.
 */
function loadLibrary(file, { withAddon = false } = {}) {
  const library = { path: file, name: libName(file), module: null, addon: null, error: null, addonError: null };
  const firstLine = (err) => String(err.message).split('\n')[0];
  try {
    library.module = require(file);
  } catch (err) {
    library.error = firstLine(err);
    return library;
  }
  if (withAddon) {
    try {
      library.addon = require(path.join(path.dirname(file), 'core', 'addon.js'));
    } catch (err) {
      library.addonError = firstLine(err);
    }
  }
  return library;
}

/** Why `functions` cannot be called on the library, or null when they can. */
function missingFrom(library, functions) {
  if (!library.module) return `${library.name} not loadable: ${library.error}`;
  const missing = functions.filter((f) => typeof library.module[f] !== 'function');
  return missing.length ? `${library.name} does not export ${missing.join(', ')}` : null;
}

// `options` is made once per block by the caller, as an application passes its options: the
// harness's own object spread is not part of loopdev's time.
function cycleSync(lib, image, options) {
  const device = lib.attachSync(image, options);
  if (options.hold) {
    state.held.add(device);
    device.closeSync();
    state.held.delete(device);
  } else {
    device.detachSync();
  }
}

async function cycleAsync(lib, image, options) {
  const device = await lib.attach(image, options);
  if (options.hold) {
    state.held.add(device);
    await device.close();
    state.held.delete(device);
  } else {
    await device.detach();
  }
}

const libraries = { current: null, vs: null };

/**
 * attach + detach through the addon's native steps, with the arguments the library passes for
 * plain options (lib/loop/attach.ts withBackingOpen() and attempt(), lib/loop/detach.ts
 * detachFlow()); every argument position, slot and mode bit is read from the layout
 * dist/core/addon.js exports. Each step's arguments are built once by name (positional()); a
 * cycle sets only the values that change (the backing fd, the device and its identity) and
 * passes them positionally, as lib/ does.
 */
function addonCycles({ addon, ATTACH, DETACH, ATTACH_MODE, u64, positional, argumentIndex }, image) {
  const attached = new Float64Array(ATTACH.count);
  const detached = new Float64Array(DETACH.count);
  // The backing file opened once (read-write, following links); attach: device -1 (GET_FREE),
  // offset, size limit, flags and sector size 0, the path as label; the backing fd closed.
  // detach: no path (the addon opens /dev/loopN), no held fd, checked to be the binding attach made.
  const open = positional('openBacking', { path: image, readOnly: false, noFollow: false });
  const attach = positional('attach', {
    controlFd: controlFd(addon), device: -1, backingFd: -1, backingPath: image, offset: 0, sizeLimit: 0, flags: 0, sectorSize: 0,
    label: image, mode: ATTACH_MODE.lockControl, partitions: undefined, out: attached,
  });
  const detach = positional('detach', {
    number: -1, path: undefined, heldFd: -1, checkIdentity: true, diskseq: 0, backingDevice: 0, backingInode: 0, partitions: undefined, out: detached,
  });
  const at = {
    backingFd: argumentIndex('attach', 'backingFd'),
    number: argumentIndex('detach', 'number'),
    diskseq: argumentIndex('detach', 'diskseq'),
    backingDevice: argumentIndex('detach', 'backingDevice'),
    backingInode: argumentIndex('detach', 'backingInode'),
  };
  const attachWith = (backing) => {
    attach[at.backingFd] = backing;
    return attach;
  };
  // The device attach bound, as detach takes it.
  const detachAttached = () => {
    detach[at.number] = attached[ATTACH.number];
    detach[at.diskseq] = u64(attached, ATTACH.diskseq);
    detach[at.backingDevice] = u64(attached, ATTACH.backingDevice);
    detach[at.backingInode] = u64(attached, ATTACH.backingInode);
    return detach;
  };
  return {
    sync() {
      const backing = addon.openBacking.sync(...open);
      try {
        addon.attach.sync(...attachWith(backing));
      } finally {
        addon.closeOwned.sync(backing);
      }
      addon.detach.sync(...detachAttached());
    },
    async async() {
      const backing = await addon.openBacking.async(...open);
      try {
        await addon.attach.async(...attachWith(backing));
      } finally {
        await addon.closeOwned.async(backing);
      }
      await addon.detach.async(...detachAttached());
    },
  };
}

let directControl;
/** One control fd for the direct rows, opened on first use as the library opens its own. */
function controlFd(addon) {
  directControl ??= addon.openControl.sync();
  return directControl;
}

/** Why the library's addon cannot be called directly, or null. */
function addonMissing(library) {
  if (!library.module) return `${library.name} not loadable: ${library.error}`;
  if (!library.addon) return `core/addon.js beside ${library.name} not loadable: ${library.addonError}`;
  const missing = ['addon', 'ATTACH', 'DETACH', 'ATTACH_MODE', 'u64', 'positional', 'argumentIndex'].filter((name) => !library.addon[name]);
  if (missing.length) return `core/addon.js beside ${library.name} does not export ${missing.join(', ')} (an addon of another shape)`;
  return library.addon.addon.openBacking ? null : `the addon beside ${library.name} has no openBacking step (an addon of another shape)`;
}

module.exports = { ROOT, libraries, libName, loadLibrary, missingFrom, cycleSync, cycleAsync, addonCycles, addonMissing };
