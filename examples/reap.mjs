// A crashed job's device, found and released: a child process attaches an image with the
// owner tag and is SIGKILLed (nothing of its own can clean up), then reap() releases what it
// left, looking only at devices backed by files in this example's directory.
// Run as root: node examples/reap.mjs
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

import { reap } from '../dist/index.mjs';

const dir = mkdtempSync(join(tmpdir(), 'loopdev-reap-'));
const image = join(dir, 'job.img');
writeFileSync(image, '');
truncateSync(image, 16 * 1024 * 1024);

try {
  const job = `const { attachSync } = require(${JSON.stringify(join(dirname(fileURLToPath(import.meta.url)), '..', 'dist', 'index.js'))});
    console.log(attachSync(${JSON.stringify(image)}, { owner: true }).path);
    process.kill(process.pid, 'SIGKILL');`;
  const crashed = spawnSync(process.execPath, ['-e', job], { encoding: 'utf8' });
  console.log(`the job attached ${crashed.stdout.trim()} and died of ${crashed.signal}`);

  console.log('dry run:', await reap({ backingDirectory: dir, dryRun: true }));
  console.log('reaped:', await reap({ backingDirectory: dir }));
  console.log('left:', await reap({ backingDirectory: dir }));
} finally {
  rmSync(dir, { recursive: true, force: true });
}
