// A writer for the "newc" cpio format, the one the kernel unpacks as an initramfs. Written
// here rather than spawning cpio(1) because the initramfs needs a /dev/console node, which
// only root could mknod on disk, and because the format is a few lines.
'use strict';

const S_IFDIR = 0o040000;
const S_IFREG = 0o100000;
const S_IFCHR = 0o020000;

const pad4 = (length) => Buffer.alloc((4 - (length % 4)) % 4);

function entry(name, { mode, data = Buffer.alloc(0), rdev = [0, 0] }, ino) {
  const fields = [ino, mode, 0, 0, 1, 0, data.length, 0, 0, rdev[0], rdev[1], Buffer.byteLength(name) + 1, 0];
  const header = Buffer.from(`070701${fields.map((n) => n.toString(16).padStart(8, '0')).join('')}${name}\0`, 'latin1');
  return [header, pad4(header.length), data, pad4(data.length)];
}

/**
 * @param files [{ name: 'bin/busybox', type: 'file'|'dir'|'char', mode, data, rdev: [major, minor] }]
 * @returns the archive
 */
function cpio(files) {
  const parts = [];
  files.forEach((file, index) => {
    const type = { dir: S_IFDIR, file: S_IFREG, char: S_IFCHR }[file.type];
    parts.push(...entry(file.name, { mode: type | (file.mode ?? 0o755), data: file.data, rdev: file.rdev }, index + 1));
  });
  parts.push(...entry('TRAILER!!!', { mode: 0 }, 0));
  return Buffer.concat(parts);
}

module.exports = { cpio };
