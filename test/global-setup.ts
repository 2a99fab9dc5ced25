// The suite leaves the machine with the loop devices it had: GET_FREE creates devices when
// none is free (the concurrency tests need dozens), so the ones that appeared during the run
// and are unbound at the end are removed again. A device bound or open (someone else's, or
// being set up right now) is refused by the kernel with EBUSY and kept.
import { existsSync, readdirSync } from 'node:fs';

import { removeDeviceSync } from '../lib/index';

const loopDevices = (): string[] => readdirSync('/sys/block').filter((name) => /^loop\d+$/.test(name));

let before = new Set<string>();

export function setup(): void {
  before = new Set(loopDevices());
}

export function teardown(): void {
  if (process.getuid?.() !== 0 || !existsSync('/dev/loop-control')) return;
  for (const name of loopDevices()) {
    if (before.has(name) || existsSync(`/sys/block/${name}/loop/backing_file`)) continue;
    try {
      removeDeviceSync(Number(name.slice('loop'.length)), { retry: false });
    } catch {
      // bound or open right now: not ours to remove
    }
  }
}
