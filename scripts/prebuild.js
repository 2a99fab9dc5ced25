// Runs before `npm pack`: copies the freshly built N-API binary into prebuilds/<platform>-<arch>/
// so that the tarball works where npm blocks install scripts (npm 11's default for dependencies).
// N-API keeps the binary valid across Node versions (NAPI_VERSION 8: Node >= 12.22).
'use strict';
const { copyFileSync, mkdirSync } = require('node:fs');
const { join } = require('node:path');

const root = join(__dirname, '..');
const target = join(root, 'prebuilds', `${process.platform}-${process.arch}`);
mkdirSync(target, { recursive: true });
copyFileSync(join(root, 'build', 'Release', 'loopdev.node'), join(target, 'loopdev.node'));
console.log(`prebuilt binary: ${join('prebuilds', `${process.platform}-${process.arch}`, 'loopdev.node')}`);
