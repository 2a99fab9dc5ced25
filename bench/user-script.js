'use strict';
// A user's script, run by the bench as a fresh `node` process: N sync cycles in a plain loop,
// each timed (after WARMUP untimed ones, 0 for the script as a user writes it); prints
// { timings_ns } as JSON.
//
// argv: LIB_PATH IMAGE CYCLES [WARMUP]

const [libPath, image, cyclesArg, warmupArg = '0'] = process.argv.slice(2);
const { attachSync, detachSync } = require(libPath);

for (let i = 0; i < Number(warmupArg); i++) detachSync(attachSync(image));
const cycles = Number(cyclesArg);
const timings = new Array(cycles);
for (let i = 0; i < cycles; i++) {
  const t0 = process.hrtime.bigint();
  detachSync(attachSync(image));
  timings[i] = Number(process.hrtime.bigint() - t0);
}
process.stdout.write(`${JSON.stringify({ timings_ns: timings })}\n`);
