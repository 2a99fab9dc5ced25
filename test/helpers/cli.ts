// Running the built CLI, and the values its unit tests format and parse.
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';

import { parseCommand, UsageError } from '../../lib/cli/parse';
import type { LoopInfo } from '../../lib/loop/inspect';

export const root = join(__dirname, '..', '..');
export const cli = join(root, 'dist', 'cli.js');

export interface Run {
  status: number | null;
  stdout: string;
  stderr: string;
}

/** Runs the built CLI; the environment drops NODE_DEBUG so that no stack trace leaks in. */
export function run(args: string[], env: NodeJS.ProcessEnv = {}): Run {
  const { NODE_DEBUG: _ignored, ...rest } = process.env;
  const result = spawnSync(process.execPath, [cli, ...args], { cwd: root, encoding: 'utf8', env: { ...rest, ...env }, timeout: 30_000 });
  if (result.error) throw result.error;
  return { status: result.status, stdout: result.stdout, stderr: result.stderr };
}

// Preloaded in the child: every require of the addon's modules throws.
const WITHOUT_ADDON = String.raw`
  const Module = require('node:module');
  const load = Module._load;
  Module._load = function (request, ...rest) {
    if (/[\\/]core[\\/](addon|flow)$|\.node$/.test(request)) throw new Error('the addon cannot load here');
    return load.call(this, request, ...rest);
  };
  require(process.argv[1]);
`;

/** Runs the built CLI in a child where the addon cannot load (what must work without it). */
export function runWithoutAddon(args: string[]): Run {
  const { NODE_DEBUG: _ignored, ...env } = process.env;
  const result = spawnSync(process.execPath, ['-e', WITHOUT_ADDON, cli, ...args], { cwd: root, encoding: 'utf8', env, timeout: 30_000 });
  return { status: result.status, stdout: result.stdout, stderr: result.stderr };
}

/** A LoopInfo for formatting tests: /dev/loop3 over /tmp/a.img (10 MiB), with `overrides`. */
export function fakeInfo(overrides: Partial<LoopInfo> = {}): LoopInfo {
  return {
    path: '/dev/loop3',
    number: 3,
    backingFile: '/tmp/a.img',
    backingDevice: 65024, // 254:0
    backingInode: 1234,
    offset: 0,
    sizeLimit: 0,
    size: 10 * 1024 * 1024,
    readOnly: false,
    autoclear: false,
    partscan: false,
    directIO: false,
    sectorSize: 512,
    major: 7,
    minor: 3,
    diskseq: 42,
    label: '/tmp/a.img',
    partitions: [],
    ...overrides,
  };
}

/** The UsageError parseCommand throws for `argv` (fails the test if it does not throw one). */
export function usageError(argv: string[]): UsageError {
  try {
    parseCommand(argv);
  } catch (error) {
    if (error instanceof UsageError) return error;
    throw error;
  }
  throw new Error(`parseCommand(${JSON.stringify(argv)}) did not throw`);
}
