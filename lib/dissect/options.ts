// dissect()'s and mountImage()'s options, checked before anything is opened (the CLI checks
// them too, without loading the addon).
import { invalid, optionalBoolean, optionsObject } from '../loop/options';
import { architecturesFor } from './architecture';
import type { Architecture } from './partition-types';

export interface DissectOptions {
  /**
   * Use the root and /usr partitions of this architecture (systemd's names: x86-64, arm64...),
   * then of its secondary one (x86 for x86-64, arm for arm64). Default: this machine's.
   */
  architecture?: Architecture;
  /** Plan every mount read-only. */
  readOnly?: boolean;
}

const DISSECT_KEYS = new Set(['architecture', 'readOnly']);

/** Checked options: the architectures to consider and read-only. */
export interface DissectPlan {
  architectures: Architecture[];
  readOnly: boolean;
}

export function planDissect(rawOptions: unknown, keys: ReadonlySet<string> = DISSECT_KEYS): DissectPlan {
  const options = optionsObject(rawOptions);
  for (const key of Object.keys(options)) {
    if (!keys.has(key)) invalid(`unknown option '${key}' (known: ${[...keys].join(', ')})`);
  }
  return { architectures: architecturesFor(options.architecture), readOnly: optionalBoolean(options, 'readOnly') ?? false };
}

