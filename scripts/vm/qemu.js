// Boots a guest under qemu and waits for it to stop. The kernel console goes to a log file;
// the guest's stdout and stderr come back over virtio-serial ports connected to unix sockets
// that we listen on, and are copied to ours as they arrive. qemu never outlives the call: a
// timeout or a signal kills it, and it is started with a parent-death signal so that even a
// SIGKILL of this process takes it down.
'use strict';
const { spawn } = require('node:child_process');
const { createServer } = require('node:net');
const { join } = require('node:path');

const { need, say, settings, track, which } = require('./host');

// 9p's option syntax splits on commas; a literal comma is written twice.
const optionValue = (value) => String(value).replace(/,/g, ',,');

/**
 * @param guest   { vmlinuz, initrd, image } from guest.js
 * @param shares  [{ tag, host, readonly }]: 9p exports; the guest side mounts them by tag
 * @param ports   [{ name, socket }]: virtio-serial ports, each connected to a unix socket
 */
function qemuArgs({ arch, guest, snapshot, append, runDir, shares, ports, consoleLog, memory = 4096, cpus = 2 }) {
  const virtfs = (tag, path, readonly) => [
    '-virtfs',
    `local,path=${optionValue(path)},mount_tag=${tag},security_model=none,multidevs=remap${readonly ? ',readonly=on' : ''}`,
  ];
  const cmdline = [`console=${arch.console}`, 'panic=-1', 'net.ifnames=0', `vm.init=${append.init}`, ...append.extra];
  return [
    ...arch.machine,
    '-accel', arch.accel,
    '-cpu', arch.cpu,
    '-smp', String(cpus),
    '-m', String(memory),
    '-nodefaults', '-no-user-config', '-display', 'none',
    // A kernel panic (or init exiting) reboots, and -no-reboot turns that into an exit.
    '-no-reboot',
    '-kernel', guest.vmlinuz,
    '-initrd', guest.initrd,
    '-append', cmdline.join(' '),
    '-drive', `file=${optionValue(guest.image)},if=none,id=root,format=raw${snapshot ? ',snapshot=on' : ''}`,
    '-device', 'virtio-blk-pci,drive=root',
    '-netdev', 'user,id=net',
    // No option ROM: nothing boots from the network (and qemu-system-arm may lack ipxe-qemu).
    '-device', 'virtio-net-pci,netdev=net,romfile=',
    '-chardev', `file,id=console,path=${optionValue(consoleLog)}`,
    '-serial', 'chardev:console',
    ...virtfs('loopdevrun', runDir, false),
    ...shares.flatMap((share) => virtfs(share.tag, share.host, share.readonly)),
    ...(ports.length ? ['-device', 'virtio-serial-pci,id=vser'] : []),
    ...ports.flatMap((port, i) => [
      '-chardev', `socket,id=port${i},path=${optionValue(port.socket)}`,
      '-device', `virtserialport,bus=vser.0,chardev=port${i},name=${port.name}`,
    ]),
  ];
}

/** Listens on `socket` and copies whatever the guest sends there into `output`. */
function forward(socket, output) {
  const server = createServer((connection) => {
    connection.on('data', (chunk) => output.write(chunk));
    connection.on('error', () => {});
  });
  const closed = new Promise((resolve) => {
    server.on('connection', (connection) => connection.on('close', resolve));
  });
  return new Promise((resolve, reject) => {
    server.on('error', reject);
    server.listen(socket, () => resolve({ server, closed }));
  });
}

/**
 * Runs qemu until the guest powers off, the timeout passes or a signal arrives.
 * @returns { code, signal, timedOut, qemuStderr }
 */
async function boot(options) {
  const { arch, timeoutSeconds, streams = [] } = options;
  const ports = streams.map((stream, i) => ({ name: stream.name, socket: join(options.runDir, `port${i}.sock`), output: stream.output }));
  const forwards = await Promise.all(ports.map((port) => forward(port.socket, port.output)));
  const qemu = need(arch.qemu, arch.qemuPackage);
  const args = qemuArgs({ ...options, ports });
  if (settings.verbose) say(`$ ${qemu} ${args.join(' ')}`);
  const setpriv = which('setpriv');
  const child = setpriv
    ? spawn(setpriv, ['--pdeathsig', 'KILL', '--', qemu, ...args], { stdio: ['ignore', 'ignore', 'pipe'] })
    : spawn(qemu, args, { stdio: ['ignore', 'ignore', 'pipe'] });
  const untrack = track(child);
  let qemuStderr = '';
  child.stderr.on('data', (chunk) => (qemuStderr += chunk));
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    child.kill('SIGKILL');
  }, timeoutSeconds * 1000);
  const [code, signal] = await new Promise((resolve) => child.on('close', (...result) => resolve(result)));
  clearTimeout(timer);
  untrack();
  // The ports' data is in the socket buffers by the time qemu exits (a guest write returns
  // once qemu has taken it); let the last of it arrive, then stop listening.
  let grace;
  await Promise.race([Promise.all(forwards.map((f) => f.closed)), new Promise((resolve) => (grace = setTimeout(resolve, 2000)))]);
  clearTimeout(grace);
  for (const f of forwards) f.server.close();
  return { code, signal, timedOut, qemuStderr };
}

module.exports = { boot };
