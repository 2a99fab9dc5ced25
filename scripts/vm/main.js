// `npm run vm -- [options] -- COMMAND [ARGS...]`: runs COMMAND in a Debian guest under qemu
// (see docs/vm.md). Exit status: COMMAND's; 124 on timeout; 125 when the harness or the
// guest failed before COMMAND finished; 128+n on signal n.
'use strict';
const { readdirSync, rmSync } = require('node:fs');
const { constants } = require('node:os');
const { join } = require('node:path');

const { archInfo } = require('./arch');
const { abandonPending } = require('./cache');
const { ensureGuest, logPath } = require('./guest');
const { settings, say, stopAll } = require('./host');
const { guestLayout } = require('./layout');
const { parseOptions, UsageError, USAGE } = require('./options');
const { runInGuest } = require('./run');

let stopped = null;
for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
  process.on(signal, () => {
    if (stopped) return;
    stopped = signal;
    say(`${signal}: stopping`);
    // Every step then fails or returns and cleans up; exit() below gives the status.
    stopAll();
  });
}

function exit(status) {
  abandonPending();
  process.exitCode = stopped ? 128 + constants.signals[stopped] : status;
}

/** A fresh console log per run; the last 20 are kept. */
function consoleLogFor(arch) {
  const stamp = new Date().toISOString().replace(/[-:]/g, '').replace(/\..*/, '');
  const file = logPath(`console-${arch.name}-${stamp}-${process.pid}.log`);
  const dir = join(file, '..');
  const old = readdirSync(dir).filter((name) => name.startsWith('console-')).sort((a, b) => a.slice(-26).localeCompare(b.slice(-26)));
  for (const name of old.slice(0, Math.max(0, old.length - 19))) rmSync(join(dir, name), { force: true });
  return file;
}

/**
 * How many times a guest is booted when its kernel dies before COMMAND starts. Under emulation
 * (TCG) an x64 guest's kernel now and then meets a breakpoint that its own code patching had
 * already taken away ("Oops: int3" on the console; seen once in 13 boots of Debian 13's 6.12 on
 * qemu 7.2; most likely the emulator ran code it had translated before the patch). Nothing of
 * COMMAND ran and the root file system is a snapshot, so booting again is safe; a run that
 * started is never repeated.
 */
const BOOTS = 3;

/** The guest stopped, without a timeout or an error from its init, before COMMAND started. */
const diedBooting = (result) => result.status === null && result.bootSeconds === null && !result.timedOut && result.error === null;

async function main() {
  const options = parseOptions(process.argv.slice(2));
  if (options.help) {
    console.log(USAGE);
    return 0;
  }
  settings.verbose = options.verbose;
  const arch = archInfo(options.arch);
  if (options.prepare) {
    // The image only: what the guest mounts (the arm64 addon's cross-build, in a mount
    // namespace of its own) is made by the run that needs it. A new mount namespace copies
    // every mount of the moment, and a test's loop mount copied there keeps its device bound
    // until the namespace ends: nothing of that kind may run beside the host suite.
    const guest = await ensureGuest(arch, options.release);
    if (stopped) return 130;
    say(`the ${arch.name} ${options.release} guest is ready: kernel ${guest.manifest.kernel}`);
    return 0;
  }
  const layout = await guestLayout(arch);
  const guest = await ensureGuest(arch, options.release);
  if (stopped) return 130;
  let consoleLog;
  let result;
  for (let boot = 1; ; boot++) {
    consoleLog = consoleLogFor(arch);
    if (options.verbose) {
      say(`guest: ${arch.name}, Debian ${options.release}, kernel ${guest.manifest.kernel} (${arch.accel}), udev ${options.udev ? 'on' : 'off'}; console: ${consoleLog}`);
    }
    result = await runInGuest({
      arch,
      guest,
      layout,
      command: options.command,
      udev: options.udev,
      append: options.append,
      timeoutSeconds: options.timeout,
      consoleLog,
    });
    if (stopped || !diedBooting(result) || boot === BOOTS) break;
    say(`the guest's kernel stopped before COMMAND started (console: ${consoleLog}): booting it again`);
  }
  if (options.verbose && result.bootSeconds !== null) say(`boot to COMMAND: ${result.bootSeconds.toFixed(1)} s`);
  if (stopped) return 130;
  if (result.timedOut) {
    say(`timed out after ${options.timeout} s: the guest was stopped (console: ${consoleLog})`);
    return 124;
  }
  if (result.status === null) {
    say(`the guest stopped before COMMAND finished${result.error ? `: ${result.error}` : ''} (console: ${consoleLog})`);
    if (result.qemu.qemuStderr) say(`qemu said: ${result.qemu.qemuStderr.trim()}`);
    return 125;
  }
  return result.status;
}

main().then(exit, (err) => {
  if (err instanceof UsageError) {
    console.error(`${err.message}\n\n${USAGE}`);
    exit(2);
    return;
  }
  if (!stopped) say(err.stack && settings.verbose ? err.stack : err.message);
  exit(125);
});
