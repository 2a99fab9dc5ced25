'use strict';
// The bench's images (sparse files in its own directory) and their cleanup: whatever is still
// bound to one of them at the end, after an error or on a signal is detached, and only that.

const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { execFileSync } = require('node:child_process');

const { execFileP, sleepSync, state } = require('./state');
const { floorPath } = require('./floors');

const MIB = 1024 * 1024;
const IMAGE_SIZE = 64 * MIB;

/** Makes the bench's own image directory under `base` (default: the OS temp dir). */
function makeImageDir(base) {
  // realpath: sysfs shows the resolved path of the backing file
  state.tmpdir = fs.mkdtempSync(path.join(fs.realpathSync(base || os.tmpdir()), 'loopdev-bench-'));
  return state.tmpdir;
}

function makeImage(name) {
  const file = path.join(state.tmpdir, `${name}.img`);
  const fd = fs.openSync(file, 'wx', 0o600);
  try {
    fs.ftruncateSync(fd, IMAGE_SIZE); // sparse
  } finally {
    fs.closeSync(fd);
  }
  state.images.push(file);
  return file;
}

/** Strips the newline and the " (deleted)" suffix the kernel adds once the file is unlinked. */
function normaliseBacking(text) {
  return text.replace(/\n+$/, '').replace(/ \(deleted\)$/, '');
}

/** Loop devices whose backing file is one of `images` or lies in the bench's directory. */
function scanBound(images) {
  const wanted = new Set(images);
  const prefix = state.tmpdir ? `${state.tmpdir}${path.sep}` : null;
  const found = [];
  let bound = 0;
  for (const name of fs.readdirSync('/sys/block')) {
    if (!name.startsWith('loop')) continue;
    let backing;
    try {
      backing = normaliseBacking(fs.readFileSync(`/sys/block/${name}/loop/backing_file`, 'utf8'));
    } catch {
      continue; // unbound
    }
    bound++;
    if (wanted.has(backing) || (prefix && backing.startsWith(prefix))) found.push({ device: `/dev/${name}`, backing });
  }
  return { bound, found };
}

/** Detaches the devices bound to these images (ours only). Returns the device paths. */
async function cleanupImages(images) {
  if (!images.length || !fs.existsSync(floorPath('cycle'))) return [];
  const { stdout } = await execFileP(floorPath('cycle'), ['--cleanup', ...images]);
  return JSON.parse(stdout).detached;
}

/** Synchronous, idempotent; runs at the end, after an error, and on a signal. */
function finalCleanup() {
  if (state.cleanup) return state.cleanup;
  const result = { images: [...state.images], detached_at_cleanup: [], left_bound: [], bound_devices_scanned: 0, errors: [] };
  for (const device of state.held) {
    try {
      device.closeSync();
    } catch (err) {
      result.errors.push(`closeSync ${device.path}: ${err.message}`);
    }
  }
  state.held.clear();
  if (state.images.length) {
    const cycleBin = floorPath('cycle');
    for (let attempt = 0; attempt < 3; attempt++) {
      const { found } = scanBound(state.images);
      if (!found.length) break;
      if (attempt > 0) sleepSync(200); // a lazily released device (still open somewhere) needs its last close
      try {
        if (fs.existsSync(cycleBin)) {
          const out = JSON.parse(execFileSync(cycleBin, ['--cleanup', ...state.images], { encoding: 'utf8' }));
          result.detached_at_cleanup.push(...out.detached);
        } else {
          for (const { device } of found) {
            execFileSync('losetup', ['--detach', device]);
            result.detached_at_cleanup.push(device);
          }
        }
      } catch (err) {
        result.errors.push(String(err.message));
      }
    }
  }
  const scan = scanBound(state.images);
  result.left_bound = scan.found;
  result.bound_devices_scanned = scan.bound;
  result.ok = scan.found.length === 0 && result.errors.length === 0;
  if (state.tmpdir) {
    try {
      fs.rmSync(state.tmpdir, { recursive: true, force: true });
    } catch (err) {
      result.errors.push(`rm ${state.tmpdir}: ${err.message}`);
    }
  }
  state.cleanup = result;
  return result;
}

function cleanupLine(c) {
  const images = c.images.length;
  if (c.ok) {
    return `Cleanup check: scanned /sys/block/loop*/loop/backing_file (${c.bound_devices_scanned} bound on the machine): 0 bound to the bench's ${images} images - OK` +
      (c.detached_at_cleanup.length ? ` (${c.detached_at_cleanup.length} detached by the final cleanup)` : '');
  }
  return `Cleanup check: FAILED - still bound: ${c.left_bound.map((f) => `${f.device} (${f.backing})`).join(', ') || 'none'}; errors: ${c.errors.join('; ') || 'none'}`;
}

function emergencyExit() {
  for (const child of state.children) child.kill('SIGKILL');
  sleepSync(300); // let them die before scanning
  const c = finalCleanup();
  process.stderr.write(`${cleanupLine(c)}\n`);
  process.exit(130);
}

function onSignal(signal) {
  if (state.aborted) {
    process.stderr.write(`\n${signal} again: cleaning up now\n`);
    emergencyExit();
  }
  state.aborted = true;
  state.signal = signal;
  process.stderr.write(`\n${signal}: stopping the running step, then cleaning up (send again to force)\n`);
  for (const child of state.children) child.kill('SIGTERM');
  setTimeout(() => {
    process.stderr.write('timed out waiting for the running step; cleaning up now\n');
    emergencyExit();
  }, 15_000).unref();
}

/** A first signal stops the running step and lets the run clean up; a second cleans up at once. */
function cleanupOnSignals() {
  for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP']) process.on(signal, onSignal);
}

function loopDeviceNames() {
  return fs.readdirSync('/sys/block').filter((n) => /^loop\d+$/.test(n));
}

/** How many loop devices are bound on the machine (anyone's). */
function countBound() {
  return loopDeviceNames().filter((name) => fs.existsSync(`/sys/block/${name}/loop/backing_file`)).length;
}

const devicesBefore = new Set(loopDeviceNames());

/**
 * Leaves the machine as the bench found it: GET_FREE creates devices when none is free (the
 * 256-device list rows make ~250), so remove the ones that appeared during the run and are
 * unbound now (LOOP_CTL_REMOVE refuses a device that is bound or open: EBUSY).
 */
function removeCreatedDevices(lib) {
  if (!lib?.removeDeviceSync) return 0;
  let removed = 0;
  for (const name of loopDeviceNames()) {
    if (devicesBefore.has(name) || fs.existsSync(`/sys/block/${name}/loop/backing_file`)) continue;
    try {
      lib.removeDeviceSync(Number(name.slice(4)), { retry: false });
      removed++;
    } catch {
      // in use by someone else right now: theirs to keep
    }
  }
  return removed;
}

module.exports = {
  MIB,
  makeImageDir,
  makeImage,
  cleanupImages,
  finalCleanup,
  cleanupLine,
  cleanupOnSignals,
  countBound,
  countLoopDevices: () => loopDeviceNames().length,
  removeCreatedDevices,
};
