'use strict';
// list() and find(file) with 256 devices bound to one image, against C floors and losetup.

const path = require('node:path');

const { log, spawnTracked, state } = require('../harness/state');
const { libraries } = require('../harness/library');
const { measureSync, measureAsync } = require('../harness/measure');
const { interleaved } = require('../harness/blocks');
const { cRun, runC } = require('../harness/floors');
const { makeImage, cleanupImages, countBound } = require('../harness/images');

/** run() that also records how many devices the call returned. */
const counted = (fn) => async (iterations, warmup) => {
  let count = 0;
  const timings = await fn(iterations, warmup, (c) => {
    count = c;
  });
  return { timings_ns: timings, extra: { devices_returned: count } };
};

const losetupJson = async (args) => JSON.parse((await spawnTracked('losetup', args)).stdout).loopdevices.length;

function listSpecs(base, losetupBase) {
  const lib = libraries.current.module;
  return [
    { ...base, id: 'list.c-ioctl', contender: 'C floor: backing_file + ioctls', reference: true, run: cRun('list', ['--mode', 'ioctl']) },
    { ...base, id: 'list.c-sysfs', contender: 'C floor: sysfs, 10 files/device', run: cRun('list', ['--mode', 'sysfs']) },
    {
      ...base,
      id: 'list.loopdev-sync',
      contender: 'loopdev listSync()',
      needs: ['listSync'],
      run: counted((r, w, set) => measureSync(r, w, () => set(lib.listSync().length))),
    },
    {
      ...base,
      id: 'list.loopdev-async',
      contender: 'loopdev list()',
      needs: ['list'],
      run: counted((r, w, set) => measureAsync(r, w, async () => set((await lib.list()).length))),
    },
    {
      ...losetupBase,
      id: 'list.losetup',
      contender: 'losetup --list --json, spawn+parse',
      run: counted((r, w, set) => measureAsync(r, w, async () => set(await losetupJson(['--list', '--json'])))),
    },
  ];
}

function findSpecs(base, losetupBase, image) {
  const lib = libraries.current.module;
  return [
    { ...base, id: 'find.c-floor', contender: 'C floor: backing_file, ioctls per match', reference: true, run: cRun('list', ['--mode', 'find', '--file', image]) },
    {
      ...base,
      id: 'find.loopdev-sync',
      contender: 'loopdev findSync()',
      needs: ['findSync'],
      run: counted((r, w, set) => measureSync(r, w, () => set(lib.findSync(image).length))),
    },
    {
      ...base,
      id: 'find.loopdev-async',
      contender: 'loopdev find()',
      needs: ['find'],
      run: counted((r, w, set) => measureAsync(r, w, async () => set((await lib.find(image)).length))),
    },
    {
      ...losetupBase,
      id: 'find.losetup',
      contender: 'losetup --list --json --associated',
      run: counted((r, w, set) => measureAsync(r, w, async () => set(await losetupJson(['--list', '--json', '--associated', image])))),
    },
  ];
}

async function sectionList() {
  const image = makeImage('list');
  const n = state.config.listBound;
  const { iterations, warmup } = state.config.list;
  const lw = state.config.losetupList;
  log(`binding ${n} devices to ${image}`);
  try {
    const t0 = process.hrtime.bigint();
    const bind = await runC('cycle', [image, '--bind', n]);
    const bindMs = Number(process.hrtime.bigint() - t0) / 1e6;
    if (bind.devices.length !== n) throw new Error(`bound only ${bind.devices.length} of ${n} devices: ${bind.error}`);
    const total = countBound();
    log(`  bound ${n} devices in ${bindMs.toFixed(0)} ms; ${total} loop devices bound on the machine`);

    const found = (row) => `${row.devices_returned} devices returned`;
    const operation = `list all bound devices (${n} bound by the bench, ${total} in all)`;
    log(operation);
    const base = { group: 'list', operation, iterations, warmup, notes: found };
    await interleaved(listSpecs(base, { ...base, iterations: lw.iterations, warmup: lw.warmup }), state.config.blocks);

    const findOperation = `find(file) with ${n} devices bound to that file (${total} bound in all)`;
    log(findOperation);
    const findBase = { ...base, group: 'find', operation: findOperation };
    await interleaved(findSpecs(findBase, { ...findBase, iterations: lw.iterations, warmup: lw.warmup }, image), state.config.blocks);
  } finally {
    const detached = await cleanupImages([image]);
    log(`  detached ${detached.length} devices bound to ${path.basename(image)}`);
  }
}

module.exports = sectionList;
