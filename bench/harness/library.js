'use strict';
// The libraries under test (--lib, and --vs for a second one) and the cycle every section makes
// with them.

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
  const library = { path: file, name: libName(file), module: null, addon: null, error: null };
  try {
    library.module = require(file);
    if (withAddon) library.addon = require(path.join(path.dirname(file), 'core', 'addon.js'));
  } catch (err) {
    library.error = String(err.message).split('\n')[0];
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

module.exports = { ROOT, libraries, libName, loadLibrary, missingFrom, cycleSync, cycleAsync };
