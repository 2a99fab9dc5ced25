// The cache: kernels, root filesystems, Node binaries and arm64 node_modules, outside the
// checkout so that every worktree and every run shares them. Each entry is a directory named
// by what it was built from (a hash of the recipe), made under a temporary name and renamed
// when complete: an interrupted build leaves only a temporary directory, which the next
// build removes, and never an entry that looks finished.
'use strict';
const { spawnSync } = require('node:child_process');
const { createHash } = require('node:crypto');
const { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync } = require('node:fs');
const { homedir } = require('node:os');
const { join } = require('node:path');

const { say } = require('./host');

function cacheRoot() {
  const dir = process.env.LOOPDEV_VM_CACHE || join(process.env.XDG_CACHE_HOME || join(homedir(), '.cache'), 'loopdev-vm');
  mkdirSync(dir, { recursive: true });
  return dir;
}

/** A short hash of strings and file contents: the key of a cache entry. */
function hashOf(...parts) {
  const hash = createHash('sha256');
  for (const part of parts) hash.update(`${part.length}:`).update(part);
  return hash.digest('hex').slice(0, 16);
}

const fileHash = (...files) => hashOf(...files.map((file) => readFileSync(file)));

/** Mount points at or below `dir`, deepest first (from /proc/self/mountinfo). */
function mountsBelow(dir) {
  const unescape = (path) => path.replace(/\\(\d{3})/g, (_, octal) => String.fromCharCode(parseInt(octal, 8)));
  return readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .filter(Boolean)
    .map((line) => unescape(line.split(' ')[4]))
    .filter((point) => point === dir || point.startsWith(`${dir}/`))
    .sort((a, b) => b.length - a.length);
}

/**
 * Deletes a build directory, but never through a mount: a chroot build that was interrupted
 * can leave /proc or /sys mounted inside it (debootstrap mounts them), and deleting through
 * those would be a disaster. Such mounts are ours, so they are unmounted first; if one stays,
 * the directory is kept and named.
 */
function removeTree(dir) {
  if (!existsSync(dir)) return;
  for (const point of mountsBelow(dir)) {
    spawnSync('umount', ['--lazy', point], { stdio: 'inherit' });
  }
  const left = mountsBelow(dir);
  if (left.length > 0) throw new Error(`not deleting ${dir}: still mounted there: ${left.join(', ')}`);
  rmSync(dir, { recursive: true, force: true });
}

function pidAlive(pid) {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return err.code === 'EPERM';
  }
}

/** Removes temporary directories of builds whose process is gone (interrupted builds). */
function removeAbandoned(root) {
  for (const name of readdirSync(root)) {
    const match = /^\.tmp-.*-(\d+)$/.exec(name);
    if (match && !pidAlive(Number(match[1]))) removeTree(join(root, name));
  }
}

/** Temporary directories of builds still in progress, removed if this process is stopped. */
const pending = new Set();

/**
 * The cache entry `name`: returned at once when it exists, else made by `build(tmp)` in a
 * temporary directory that is renamed to `name` once `build` has finished.
 */
async function cached(name, build) {
  const root = cacheRoot();
  const final = join(root, name);
  if (existsSync(final)) return final;
  removeAbandoned(root);
  const tmp = join(root, `.tmp-${name}-${process.pid}`);
  removeTree(tmp);
  mkdirSync(tmp);
  pending.add(tmp);
  try {
    await build(tmp);
    try {
      renameSync(tmp, final);
    } catch (err) {
      // Another run finished the same entry first: use theirs.
      if (!existsSync(final)) throw err;
      say(`${name} was built by another run meanwhile; using that one`);
    }
  } finally {
    removeTree(tmp);
    pending.delete(tmp);
  }
  return final;
}

/** For the signal handlers: deletes what unfinished builds left (synchronously). */
function abandonPending() {
  for (const tmp of pending) {
    try {
      removeTree(tmp);
    } catch (err) {
      say(err.message);
    }
  }
}

module.exports = { cacheRoot, hashOf, fileHash, cached, removeTree, mountsBelow, abandonPending };
