'use strict';
// Memory worker, forked by bench/run.js with --expose-gc: RSS and open fds before, half-way
// through and after N loopdev attachSync + detachSync cycles (after a warm-up), in a fresh
// process so nothing else the harness did shows up in the figures. Each snapshot follows a
// full GC; heapTotal is reported too because V8 grows its young generation under a steady
// allocation rate, which raises RSS without any leak.
//
// argv: LIB_PATH IMAGE CYCLES WARMUP
// IPC: sends {type:'result', ...} or {type:'error'} and disconnects.

const fs = require('node:fs');

const [libPath, image, cyclesArg, warmupArg] = process.argv.slice(2);
const cycles = Number(cyclesArg);
const warmup = Number(warmupArg);
let stopRequested = false;
process.on('SIGINT', () => { stopRequested = true; });
process.on('SIGTERM', () => { stopRequested = true; });

function send(message) {
  if (process.connected) process.send(message);
}

function snapshot() {
  if (typeof globalThis.gc === 'function') {
    globalThis.gc();
    globalThis.gc();
  }
  const usage = process.memoryUsage();
  return {
    rss: usage.rss,
    heapTotal: usage.heapTotal,
    heapUsed: usage.heapUsed,
    external: usage.external,
    fds: fs.readdirSync('/proc/self/fd').length,
  };
}

async function run() {
  const lib = require(libPath);
  let retries = 0;
  const options = { onRetry: () => { retries++; } };
  const cycle = () => lib.attachSync(image, options).detachSync();
  for (let i = 0; i < warmup && !stopRequested; i++) cycle();
  const before = snapshot();
  const timings = new Array(cycles);
  let done = 0;
  let middle = null;
  while (done < cycles && !stopRequested) {
    if (middle === null && done >= cycles / 2) middle = snapshot();
    const sliceEnd = Math.min(cycles, done + 500, done < cycles / 2 ? Math.ceil(cycles / 2) : cycles);
    for (; done < sliceEnd; done++) {
      const t0 = process.hrtime.bigint();
      cycle();
      timings[done] = Number(process.hrtime.bigint() - t0);
    }
    await new Promise((resolve) => setImmediate(resolve)); // let signals through
  }
  const after = snapshot();
  timings.length = done;
  return { type: 'result', cycles: done, retries, before, middle: middle || after, after, gcExposed: typeof globalThis.gc === 'function', timings, interrupted: stopRequested };
}

run().then(
  (result) => { send(result); process.disconnect(); },
  (err) => { send({ type: 'error', error: String(err && err.stack || err) }); process.disconnect(); },
);
