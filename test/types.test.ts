// The tarball's types resolve for every consumer: `require` and `import` under node10, node16
// and bundler resolution (attw), and its package.json passes publint's strict checks. Packed
// with --ignore-scripts, as a registry would publish what `npm test` built into dist/.
import { execFileSync, spawnSync } from 'node:child_process';
import { closeSync, cpSync, mkdtempSync, openSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { testTime } from './helpers/kernel';

const root = join(__dirname, '..');
const bin = (name: string): string => join(root, 'node_modules', '.bin', name);

describe('the packed types', () => {
  let work: string;
  let tarball: string;

  beforeAll(() => {
    work = mkdtempSync(join(tmpdir(), 'loopdev-types-'));
    // Packed from a copy of what the types need: test/package.test.ts remakes prebuilds/ meanwhile.
    const copy = join(work, 'package');
    for (const name of ['package.json', 'README.md', 'LICENSE', 'dist']) cpSync(join(root, name), join(copy, name), { recursive: true });
    execFileSync('npm', ['pack', '--ignore-scripts', '--silent', '--pack-destination', work], { cwd: copy, stdio: ['ignore', 'ignore', 'pipe'] });
    tarball = join(work, readdirSync(work).find((name) => name.endsWith('.tgz'))!);
  }, testTime(60_000));

  afterAll(() => rmSync(work, { recursive: true, force: true }));

  it('attw finds no problem in either entry point, ESM or CJS', () => {
    // Into a file: attw exits before a pipe has taken more than its first 64 KiB.
    const output = join(work, 'attw.json');
    const fd = openSync(output, 'w');
    const result = spawnSync(bin('attw'), ['--format', 'json', tarball], { cwd: work, stdio: ['ignore', fd, 'pipe'] });
    closeSync(fd);
    const report = JSON.parse(readFileSync(output, 'utf8')) as {
      analysis: { entrypoints: Record<string, { resolutions: Record<string, { resolution?: { isJson: boolean; isTypeScript: boolean } }> }> };
      problems?: Record<string, unknown[]>;
    };
    expect(report.problems ?? {}).toEqual({});
    const entrypoints = report.analysis.entrypoints;
    expect(Object.keys(entrypoints).sort()).toEqual(['.', './package.json', './testing']);
    for (const name of ['.', './testing']) {
      for (const mode of ['node10', 'node16-cjs', 'node16-esm', 'bundler']) {
        expect(entrypoints[name]!.resolutions[mode]!.resolution, `${name} under ${mode}`).toMatchObject({ isTypeScript: true });
      }
    }
    expect(result.status).toBe(0);
  }, testTime(60_000));

  it('publint --strict is clean', () => {
    const result = spawnSync(bin('publint'), ['--strict', tarball], { cwd: work, encoding: 'utf8' });
    expect(result.stdout).toMatch(/All good!/);
    expect(result.status).toBe(0);
  }, testTime(60_000));
});
