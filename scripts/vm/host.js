// Small helpers for running host programs and finding the host's own Node and npm.
'use strict';
const { spawn, spawnSync } = require('node:child_process');
const { existsSync, realpathSync } = require('node:fs');
const { delimiter, dirname, join } = require('node:path');

/** Set by main.js: with --verbose every command the harness runs is echoed to stderr. */
const settings = { verbose: false };

/**
 * Children running right now. A signal to the harness stops them (stopAll), and each waiting
 * step then fails and cleans up after itself: a build removes its temporary directory only
 * once its child has exited.
 */
const children = new Set();

function track(child) {
  children.add(child);
  return () => children.delete(child);
}

/** SIGTERM (debootstrap then unmounts what it mounted), SIGKILL if that did not do. */
function stopAll() {
  for (const child of children) child.kill('SIGTERM');
  setTimeout(() => {
    for (const child of children) child.kill('SIGKILL');
  }, 5000).unref();
}

function say(message) {
  process.stderr.write(`[vm] ${message}\n`);
}

function describe(command, args) {
  return [command, ...args].map((a) => (/^[\w@%+=:,./-]+$/.test(a) ? a : `'${a.replace(/'/g, "'\\''")}'`)).join(' ');
}

/**
 * Runs a program to completion. Its output goes to `log` (an fd) when given, else to our
 * stderr, so that build steps never write into COMMAND's stdout. Rejects on failure, with
 * the tail of what it printed when that went to a log.
 */
function run(command, args, { cwd, env, log, input } = {}) {
  if (settings.verbose) say(`$ ${describe(command, args)}`);
  return new Promise((resolve, reject) => {
    const out = log ?? 2;
    const child = spawn(command, args, { cwd, env: env ?? process.env, stdio: [input === undefined ? 'ignore' : 'pipe', out, out] });
    if (input !== undefined) child.stdin.end(input);
    const untrack = track(child);
    child.on('error', reject);
    child.on('close', (code, signal) => {
      untrack();
      if (code === 0) resolve();
      else reject(new Error(`${describe(command, args)} failed (${signal ?? `exit ${code}`})`));
    });
  });
}

/** Runs a program and returns its stdout (stderr passes through); throws on failure. */
function capture(command, args, { cwd, env } = {}) {
  const result = spawnSync(command, args, { cwd, env: env ?? process.env, encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'], maxBuffer: 64 << 20 });
  if (result.error) throw result.error;
  if (result.status !== 0) throw new Error(`${describe(command, args)} failed (exit ${result.status})`);
  return result.stdout;
}

/** Retries a network step a few times: mirrors and registries fail transiently. */
async function retry(what, attempts, step) {
  for (let attempt = 1; ; attempt++) {
    try {
      return await step();
    } catch (err) {
      if (attempt >= attempts) throw err;
      say(`${what} failed (attempt ${attempt} of ${attempts}), retrying: ${err.message}`);
      await new Promise((resolve) => setTimeout(resolve, 5000));
    }
  }
}

/** An executable on PATH (or in the sbin directories, which a non-root PATH may lack). */
function which(name) {
  for (const dir of [...(process.env.PATH ?? '').split(delimiter), '/usr/local/sbin', '/usr/sbin', '/sbin']) {
    if (dir && existsSync(join(dir, name))) return join(dir, name);
  }
  return null;
}

function need(name, aptPackage) {
  const path = which(name);
  if (!path) throw new Error(`${name} is missing: apt-get install ${aptPackage}`);
  return path;
}

/**
 * The host's npm: the directory that holds bin/npm-cli.js. `npm run` tells us where it is
 * (npm_execpath); otherwise the `npm` on PATH, which is a symlink into that directory.
 */
function hostNpmDir() {
  const candidates = [process.env.npm_execpath, which('npm')].filter(Boolean);
  for (const candidate of candidates) {
    const cli = realpathSync(candidate);
    const dir = dirname(dirname(cli));
    if (existsSync(join(dir, 'bin', 'npm-cli.js'))) return dir;
  }
  throw new Error('cannot find the host npm (bin/npm-cli.js)');
}

/** Runs the host npm with the host Node (never a node_modules/.bin shim of the project). */
function npm(args, options) {
  return run(process.execPath, [join(hostNpmDir(), 'bin', 'npm-cli.js'), ...args], options);
}

module.exports = { settings, track, stopAll, say, run, capture, retry, which, need, hostNpmDir, npm };
