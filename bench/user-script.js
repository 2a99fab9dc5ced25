'use strict';
// A user's script, run by the bench as a fresh `node` process: N sync cycles in a plain loop, no
// warm-up, each timed; prints { timings_ns } as JSON.
//
// argv: LIB_PATH IMAGE CYCLES

const [libPath, image, cyclesArg] = process.argv.slice(2);
const { attachSync, detachSync } = require(libPath);

const cycles = Number(cyclesArg);
const timings = new Array(cycles);
for (let i = 0; i < cycles; i++) {
  const t0 = process.hrtime.bigint();
  detachSync(attachSync(image));
  timings[i] = Number(process.hrtime.bigint() - t0);
}
process.stdout.write(`${JSON.stringify({ timings_ns: timings })}\n`);
