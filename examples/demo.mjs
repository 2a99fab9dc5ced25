// The main job in one command: make an image, attach it, show what the kernel says, detach.
// Run as root: node examples/demo.mjs
import { rmSync, truncateSync, writeFileSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { attach, find } from '../dist/index.mjs';

const dir = mkdtempSync(join(tmpdir(), 'loopdev-demo-'));
const image = join(dir, 'demo.img');
writeFileSync(image, '');
truncateSync(image, 64 * 1024 * 1024); // a sparse 64 MiB file

try {
  const device = await attach(image, { offset: 1024 * 1024 });
  try {
    console.log(`attached ${image} to ${device.path}`);
    console.log(await device.info());
    console.log('devices backed by the image:', (await find(image)).map((info) => info.path));
  } finally {
    console.log('detach:', await device.detach());
  }
  console.log('devices backed by the image now:', (await find(image)).length);
} finally {
  rmSync(dir, { recursive: true, force: true });
}
