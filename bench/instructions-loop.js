'use strict';
// N sync attach+detach cycles and nothing else, run under callgrind by bench/instructions.js
// (no clock reads, no output per cycle). Before every SEGMENT-th cycle and after the last it
// reads process.ppid, whose uv_os_getppid() is where callgrind dumps its counts.
//
// argv: LIB_PATH IMAGE CYCLES SEGMENT plain|hold|addon

const { addonCycles, loadLibrary } = require('./harness/library');

const [libPath, image, cyclesArg, segmentArg, variant] = process.argv.slice(2);
const library = loadLibrary(libPath, { withAddon: variant === 'addon' });
if (library.error) throw new Error(library.error);
const { attachSync, detachSync } = library.module;
const HOLD = { hold: true };

const cycle = {
  plain: () => detachSync(attachSync(image)),
  hold: () => attachSync(image, HOLD).closeSync(),
  addon: variant === 'addon' ? addonCycles(library.addon, image).sync : null,
}[variant];
if (!cycle) throw new Error(`unknown variant '${variant}'`);

const cycles = Number(cyclesArg);
const segment = Number(segmentArg);
for (let i = 0; i < cycles; i++) {
  if (i % segment === 0) void process.ppid;
  cycle();
}
void process.ppid;
