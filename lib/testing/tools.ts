import { accessSync, constants } from 'node:fs';
import { delimiter, join } from 'node:path';

/** PATH and the sbin directories (often missing from PATH; mkfs lives there). */
export function toolDirs(): string[] {
  return [...(process.env.PATH ?? '').split(delimiter), '/usr/local/sbin', '/usr/sbin', '/sbin'].filter((dir) => dir !== '');
}

/** An executable on PATH or in the sbin directories. */
export function findTool(name: string): string | null {
  for (const dir of toolDirs()) {
    const candidate = join(dir, name);
    try {
      accessSync(candidate, constants.X_OK);
      return candidate;
    } catch {
      // not here
    }
  }
  return null;
}
