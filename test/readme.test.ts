// The README's front-door commands work as written: the demo attaches, reports and detaches;
// the CLI answers --help without the kernel.
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';

import { privileged } from './helpers/kernel';

const root = join(__dirname, '..');

describe('README commands', () => {
  it('loopdev --help lists every command', () => {
    const help = execFileSync(process.execPath, [join(root, 'dist', 'cli.js'), '--help'], { encoding: 'utf8' });
    for (const command of ['attach', 'detach', 'list', 'info', 'find', 'mount', 'umount', 'dissect', 'reap']) expect(help).toMatch(new RegExp(`^  ${command} `, 'm'));
  });

  it.skipIf(!privileged())('examples/demo.mjs attaches an image, prints its info and detaches it', () => {
    const output = execFileSync(process.execPath, [join(root, 'examples', 'demo.mjs')], { encoding: 'utf8' });
    const path = /attached .*demo\.img to (\/dev\/loop\d+)/.exec(output)?.[1];
    expect(path).toBeDefined();
    expect(output).toMatch(new RegExp(`devices backed by the image: \\[ '${path}' \\]`));
    expect(output).toMatch(/detach: \{ path: '\/dev\/loop\d+', wasBound: true, released: true \}/);
    expect(output).toMatch(/devices backed by the image now: 0/);
  });

  it.skipIf(!privileged())('examples/reap.mjs: a SIGKILLed job leaves a device, reap releases it and says why', () => {
    const output = execFileSync(process.execPath, [join(root, 'examples', 'reap.mjs')], { encoding: 'utf8' });
    const [, path] = /the job attached (\/dev\/loop\d+) and died of SIGKILL/.exec(output) ?? [];
    expect(path).toBeDefined();
    expect(output).toMatch(new RegExp(`dry run: \\[\\s*\\{\\s*path: '${path}'[^}]*reason: 'owner-gone'[^}]*released: false,\\s*kept: 'dry-run'`));
    expect(output).toMatch(new RegExp(`reaped: \\[\\s*\\{\\s*path: '${path}'[^}]*reason: 'owner-gone',\\s*detail: 'pid \\d+ is gone',\\s*released: true\\s*\\}\\s*\\]`));
    expect(output).toMatch(/left: \[\]/);
  });
});
