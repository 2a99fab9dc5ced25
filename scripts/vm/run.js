// One run: a fresh directory on the host, shared with the guest as /loopdev-vm/run, holding
// the guest's init, what it needs to know (config.sh), COMMAND with its environment
// (command.sh) and, afterwards, COMMAND's exit status; then the boot itself.
'use strict';
const { chmodSync, copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } = require('node:fs');
const { tmpdir } = require('node:os');
const { join } = require('node:path');

const { boot } = require('./qemu');

const INIT = join(__dirname, 'guest', 'init.sh');
const GUEST_PATH = '/loopdev-vm/run/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

const quote = (value) => `'${String(value).replace(/'/g, "'\\''")}'`;

/**
 * COMMAND's environment: small and explicit, not the host's. LOOPDEV_GUEST names the guest's
 * architecture, and LOOPDEV_GUEST_EMULATED=1 says it runs without KVM (ten to twenty times
 * slower: the test runner gives each test more time there).
 */
function guestEnvironment(arch) {
  const env = { PATH: GUEST_PATH, HOME: '/root', LOOPDEV_GUEST: arch.name, LOOPDEV_GUEST_EMULATED: arch.kvm ? '0' : '1' };
  if (process.env.CI !== undefined) env.CI = process.env.CI;
  for (const [name, value] of Object.entries(process.env)) if (name.startsWith('LOOPDEV_')) env[name] = value;
  return env;
}

/**
 * @param layout { cwd, shares: [{ host, guest, readonly }], tmpfs: [guest paths], bin: { name: guest target }, npmrc }
 */
function writeRunDir(dir, { arch, layout, command, udev }) {
  copyFileSync(INIT, join(dir, 'init.sh'));
  chmodSync(join(dir, 'init.sh'), 0o755);
  const shares = layout.shares.map((share, i) => ({ ...share, tag: `share${i}` }));
  const mounts = shares.flatMap((share) => [share.tag, share.guest, `${share.readonly ? 'ro' : 'rw'}${share.cached ? ',cache=loose' : ''}`]);
  writeFileSync(
    join(dir, 'config.sh'),
    [`UDEV=${udev ? 1 : 0}`, `MOUNTS=(${mounts.map(quote).join(' ')})`, `TMPFS=(${layout.tmpfs.map(quote).join(' ')})`, ''].join('\n'),
  );
  const env = Object.entries(guestEnvironment(arch)).map(([name, value]) => `export ${name}=${quote(value)}`);
  writeFileSync(join(dir, 'command.sh'), [...env, `cd ${quote(layout.cwd)} || exit 125`, `exec ${command.map(quote).join(' ')}`, ''].join('\n'));
  // node, npm and npx first on PATH, as links to where the guest mounts them.
  mkdirSync(join(dir, 'bin'));
  for (const [name, target] of Object.entries(layout.bin)) symlinkSync(target, join(dir, 'bin', name));
  if (layout.npmrc) writeFileSync(join(dir, 'npmrc'), layout.npmrc.text);
  for (const [name, content] of Object.entries(layout.npmrc?.files ?? {})) writeFileSync(join(dir, name), content);
  return shares;
}

const readIf = (file) => (existsSync(file) ? readFileSync(file, 'utf8').trim() : null);

/**
 * Boots `guest`, runs `command` in it and returns how that went:
 * { status (COMMAND's, or null), error (the guest init's), timedOut, bootSeconds, qemu }.
 */
async function runInGuest({ arch, guest, layout, command, udev, append, timeoutSeconds, consoleLog }) {
  const dir = mkdtempSync(join(tmpdir(), 'loopdev-vm-run-'));
  try {
    const shares = writeRunDir(dir, { arch, layout, command, udev });
    const started = Date.now();
    const qemu = await boot({
      arch,
      guest,
      snapshot: true,
      append: { init: '/loopdev-vm/run/init.sh', extra: append },
      runDir: dir,
      shares: shares.map((share) => ({ tag: share.tag, host: share.host, readonly: share.readonly })),
      streams: [
        { name: 'loopdev.stdout', output: process.stdout },
        { name: 'loopdev.stderr', output: process.stderr },
      ],
      consoleLog,
      timeoutSeconds,
    });
    const status = readIf(join(dir, 'status'));
    const bootSeconds = existsSync(join(dir, 'started')) ? (statSync(join(dir, 'started')).mtimeMs - started) / 1000 : null;
    return { status: status === null ? null : Number(status), error: readIf(join(dir, 'error')), timedOut: qemu.timedOut, bootSeconds, qemu };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

module.exports = { runInGuest };
