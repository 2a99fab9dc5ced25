'use strict';
// The run's one shared state (what was started, attached and created, whether a signal came)
// and the small helpers that read it.

const { execFile } = require('node:child_process');
const { promisify } = require('node:util');

const execFileP = promisify(execFile);

const state = {
  config: null, // the iteration counts of options.js
  quiet: false, // --json: stderr stays quiet too
  aborted: false,
  signal: null,
  children: new Set(), // every child process we started, until it exits
  held: new Set(), // loopdev hold-mode devices not yet closed
  tmpdir: null,
  images: [],
  cleanup: null, // the final cleanup's result, once it ran
};

class Aborted extends Error {}

function log(message) {
  if (!state.quiet) process.stderr.write(`${message}\n`);
}

function checkAbort() {
  if (state.aborted) throw new Aborted(`interrupted by ${state.signal}`);
}

/** Registers a child so that a signal reaches it and the cleanup waits for it. */
function track(child) {
  state.children.add(child);
  child.once('exit', () => state.children.delete(child));
  return child;
}

async function spawnTracked(file, args) {
  checkAbort();
  const promise = execFileP(file, args, { maxBuffer: 1 << 28 });
  track(promise.child);
  return promise;
}

function yieldToLoop() {
  return new Promise((resolve) => setImmediate(resolve));
}

function sleepSync(ms) {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

module.exports = { state, Aborted, log, checkAbort, track, spawnTracked, execFileP, yieldToLoop, sleepSync };
