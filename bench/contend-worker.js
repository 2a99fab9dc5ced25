'use strict';
// Contention worker, forked by bench/run.js: cycles loopdev attachSync + detachSync on one
// image for a fixed duration, in lockstep with the other workers, and reports the count,
// the retries (through the onRetry hook), the failures and each cycle's time.
//
// argv: LIB_PATH IMAGE DURATION_MS
// IPC: sends {type:'ready'}; waits for {type:'go', startAt (Date.now() ms)};
//      sends {type:'result', ...} and disconnects. SIGINT/SIGTERM stop it between cycles.

const { setTimeout: sleep } = require('node:timers/promises');

const [libPath, image, durationArg] = process.argv.slice(2);
const durationMs = Number(durationArg);
let stopRequested = false;
process.on('SIGINT', () => { stopRequested = true; });
process.on('SIGTERM', () => { stopRequested = true; });
process.on('disconnect', () => { stopRequested = true; });

function send(message) {
  if (process.connected) process.send(message);
}

async function run(startAt) {
  const lib = require(libPath);
  let retries = 0;
  const options = { onRetry: () => { retries++; } };
  const timings = [];
  let cycles = 0;
  let failures = 0;
  let lastError = null;
  const waitMs = startAt - Date.now();
  if (waitMs > 0) await sleep(waitMs);
  const start = process.hrtime.bigint();
  const end = start + BigInt(durationMs) * 1_000_000n;
  let t1 = start;
  while (!stopRequested && t1 < end) {
    // Run synchronously in ~5 ms slices, then yield so signals and IPC get through.
    const sliceEnd = t1 + 5_000_000n;
    while (t1 < end && t1 < sliceEnd) {
      const t0 = process.hrtime.bigint();
      let device;
      try {
        device = lib.attachSync(image, options);
      } catch (err) {
        failures++;
        lastError = `${err.code || ''} ${err.message}`;
        t1 = process.hrtime.bigint();
        continue;
      }
      try {
        device.detachSync();
      } catch (err) {
        failures++;
        lastError = `${err.code || ''} ${err.message}`;
      }
      t1 = process.hrtime.bigint();
      cycles++;
      timings.push(Number(t1 - t0));
    }
    await new Promise((resolve) => setImmediate(resolve));
  }
  return { type: 'result', cycles, retries, failures, lastError, elapsedNs: Number(t1 - start), timings };
}

process.on('message', (message) => {
  if (message && message.type === 'go') {
    run(message.startAt).then(
      (result) => { send(result); process.disconnect(); },
      (err) => { send({ type: 'error', error: String(err && err.stack || err) }); process.disconnect(); },
    );
  }
});

try {
  require(libPath);
  send({ type: 'ready' });
} catch (err) {
  send({ type: 'error', error: String(err && err.stack || err) });
  process.disconnect();
}
