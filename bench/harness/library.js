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
 * detachFlow()); every slot and mode bit is read from the layout dist/core/addon.js exports.
 */
function addonCycles({ addon, ATTACH, DETACH, ATTACH_MODE, u64 }, image) {
  const attached = new Float64Array(ATTACH.count);
  const detached = new Float64Array(DETACH.count);
  const control = controlFd(addon);
  const { lockControl } = ATTACH_MODE;
  // The backing file opened once (read-write, following links); attach: device -1 (GET_FREE),
  // offset, size limit, flags and sector size 0, the path as label; the backing fd closed.
  // detach: no path (the addon opens /dev/loopN), no held fd, checked to be the binding attach made.
  const identity = () => [u64(attached, ATTACH.diskseq), u64(attached, ATTACH.backingDevice), u64(attached, ATTACH.backingInode)];
  return {
    sync() {
      const backing = addon.openBacking.sync(image, false, false);
      try {
        addon.attach.sync(control, -1, backing, image, 0, 0, 0, 0, image, lockControl, undefined, attached);
      } finally {
        addon.closeOwned.sync(backing);
      }
      addon.detach.sync(attached[ATTACH.number], undefined, -1, true, ...identity(), undefined, detached);
    },
    async async() {
      const backing = await addon.openBacking.async(image, false, false);
      try {
        await addon.attach.async(control, -1, backing, image, 0, 0, 0, 0, image, lockControl, undefined, attached);
      } finally {
        await addon.closeOwned.async(backing);
      }
      await addon.detach.async(attached[ATTACH.number], undefined, -1, true, ...identity(), undefined, detached);
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
  const missing = ['addon', 'ATTACH', 'DETACH', 'ATTACH_MODE', 'u64'].filter((name) => !library.addon[name]);
  if (missing.length) return `core/addon.js beside ${library.name} does not export ${missing.join(', ')} (an addon of another shape)`;
  return library.addon.addon.openBacking ? null : `the addon beside ${library.name} has no openBacking step (an addon of another shape)`;
}

module.exports = { ROOT, libraries, libName, loadLibrary, missingFrom, cycleSync, cycleAsync, addonCycles, addonMissing };
