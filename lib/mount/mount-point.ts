// Mount points: checked before anything is attached, created on request (mkdir: true), and the
// directories a failed or undone mount created removed again, never one it did not create.
import { dirname } from 'node:path';

import { LoopError, fail, hasCode } from '../core/errors';
import { call, type Flow } from '../core/flow';
import * as io from '../core/io';

/** A mount point: checked (or created), and where mkdir started creating directories. */
export interface MountPoint {
  /** absolute, symlinks resolved: the path the kernel will show in mountinfo */
  real: string;
  /** absolute as given */
  given: string;
  /** the first directory mkdir created, if it created any */
  created: string | undefined;
}

/** Checks that `target` is a directory, or creates it (with `mkdir`); answers it with symlinks resolved. */
export function* prepareMountPoint(target: string, mkdir: boolean): Flow<MountPoint> {
  let created: string | undefined;
  try {
    const stats = yield* call(io.stat, target);
    if (!stats.isDirectory()) fail('ERR_LOOP_INVALID_ARGUMENT', `the mount point ${target} is not a directory`, { path: target });
  } catch (error) {
    if (!(error instanceof LoopError) || error.syscall === undefined) throw error;
    if (!hasCode(error, 'ENOENT') || !mkdir) {
      const hint = hasCode(error, 'ENOENT') ? ' (the mount point does not exist: create it, or pass mkdir: true)' : '';
      throw new LoopError(`${error.message}${hint}`, {
        code: error.code,
        errno: error.errno,
        syscall: error.syscall,
        path: error.path,
        cause: error,
      });
    }
    created = yield* call(io.mkdirs, target);
  }
  try {
    return { real: yield* call(io.realpath, target), given: target, created };
  } catch (error) {
    yield* removeMountPoint({ real: target, given: target, created });
    throw error;
  }
}

/** Removes the directories prepareMountPoint() created (only empty ones, deepest first). */
export function* removeMountPoint(point: MountPoint): Flow<void> {
  if (point.created === undefined) return;
  // Walk the path as given, the same spelling mkdir returned, so that a symlinked parent
  // can never lead us to a directory we did not create.
  for (let dir = point.given; dir.length >= point.created.length; dir = dirname(dir)) {
    try {
      yield* call(io.rmdir, dir);
    } catch {
      return;
    }
    if (dir === point.created) return;
  }
}
