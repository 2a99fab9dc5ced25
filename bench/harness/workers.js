'use strict';
// Node child processes (bench/*-worker.js) that measure in a process of their own and report
// over IPC: { type: 'ready' }, { type: 'result', ... } or { type: 'error', error }.

const path = require('node:path');
const { fork } = require('node:child_process');

const { track } = require('./state');

/** Forks bench/<name> with its stdout and stderr on ours (execArgv: default, ours); returns its channel. */
function forkWorker(name, args, execArgv) {
  const worker = fork(path.join(__dirname, '..', name), args.map(String), {
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    execArgv,
  });
  track(worker);
  return workerChannel(worker);
}

/** ready: the worker said 'ready'; done: its result, once it exited after sending one. */
function workerChannel(worker) {
  let resolveReady;
  let rejectReady;
  const ready = new Promise((resolve, reject) => {
    resolveReady = resolve;
    rejectReady = reject;
  });
  const done = new Promise((resolve, reject) => {
    let result = null;
    let error = null;
    worker.on('message', (m) => {
      if (m.type === 'ready') resolveReady();
      else if (m.type === 'result') result = m;
      else if (m.type === 'error') error = m.error;
    });
    worker.on('error', (e) => {
      error = error || String(e);
    });
    worker.on('exit', (code, signal) => {
      const failure = new Error(`worker ${worker.pid} exited (code ${code}, signal ${signal})${error ? `: ${error}` : ''}`);
      rejectReady(failure);
      if (result && !error) resolve(result);
      else reject(failure);
    });
  });
  ready.catch(() => {});
  done.catch(() => {});
  return { worker, ready, done };
}

async function stopWorkers(channels) {
  for (const { worker } of channels) {
    if (worker.exitCode === null && worker.signalCode === null) worker.kill('SIGTERM');
  }
  await Promise.allSettled(channels.map((c) => c.done));
}

/** Runs one worker to its end and hands back its result. */
async function runWorker(name, args, execArgv) {
  const channel = forkWorker(name, args, execArgv);
  try {
    return await channel.done;
  } finally {
    await stopWorkers([channel]);
  }
}

module.exports = { forkWorker, stopWorkers, runWorker };
