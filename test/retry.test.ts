// Policy without the kernel: the addon's functions are replaced with fakes, so retry,
// backoff, fallback, verification and in-process coordination are tested deterministically.
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';

import { attach, attachSync, detach, detachSync, LoopError } from '../lib/index';
import { addon as native } from '../lib/core/addon';
import { ATTACH_LANES as LANES } from '../lib/loop/attach';
import { backoffMs } from '../lib/core/retry';
import * as io from '../lib/core/io';
import { fakeAttach, fakeAttachAsync, fakeDetach, fakeDetachAsync, type AttachRequest, type AttachResult, type DetachRequest } from './helpers/fake-native';
import { removeTempImage, tempImagePath, writeMbr } from './helpers/images';

const MiB = 1024 * 1024;

const image = __filename; // any regular file: the fakes never open it

function bound(request: AttachRequest, number: number, extra: Partial<AttachResult> = {}): AttachResult {
  return {
    major: 7,
    minor: number,
    number,
    backingDevice: 1,
    backingInode: 2,
    offset: Number(request.offset),
    sizeLimit: Number(request.sizeLimit),
    flags: request.flags,
    size: 0,
    sectorSize: request.blockSize || 512,
    diskseq: 1000 + number,
    fd: request.keepFd ? 99 : -1,
    legacy: request.legacy,
    partitionErrors: [],
    table: false,
    ...extra,
  };
}

// The step each system call belongs to, as the addon reports it with the error (LOOPDEV_STAGES).
const STAGE_OF: Record<string, string> = { open: 'openDevice', flock: 'lockDevice', 'ioctl(LOOP_CONFIGURE)': 'configure', 'ioctl(LOOP_CLR_FD)': 'clear' };
const busy = (number: number, syscall = 'ioctl(LOOP_CONFIGURE)', errno = 16) =>
  LoopError.system(errno, syscall, `/dev/loop${number}`, { device: number, stage: STAGE_OF[syscall] });

beforeEach(() => {
  vi.spyOn(native.openControl, 'sync').mockReturnValue(42);
  vi.spyOn(native.openControl, 'async').mockResolvedValue(42);
  vi.spyOn(native.detach, 'sync').mockImplementation(fakeDetach(() => ({ cleared: true, released: true, diskseq: 0 })));
  vi.spyOn(native.detach, 'async').mockImplementation(fakeDetachAsync(() => ({ cleared: true, released: true, diskseq: 0 })));
});
afterEach(() => {
  vi.restoreAllMocks();
});

describe('backoffMs', () => {
  const options = { attempts: 64, minDelayMs: 2, maxDelayMs: 250 };
  it('retries the first time at once, then with jitter under a doubling ceiling', () => {
    expect(backoffMs(1, options, () => 1)).toBe(0);
    expect(backoffMs(2, options, () => 1)).toBe(4);
    expect(backoffMs(3, options, () => 1)).toBe(8);
    expect(backoffMs(2, options, () => 0)).toBe(2);
    expect(backoffMs(30, options, () => 1)).toBe(250);
    for (let retry = 2; retry < 20; retry++) {
      const delay = backoffMs(retry, options);
      expect(delay).toBeGreaterThanOrEqual(2);
      expect(delay).toBeLessThanOrEqual(250);
    }
  });
});

describe('attach retry policy', () => {
  it('EBUSY on configure: asks for a free device again, and reports each retry', () => {
    const seen: number[] = [];
    let calls = 0;
    vi.spyOn(native.attach, 'sync').mockImplementation(fakeAttach((request) => {
      calls++;
      expect(request.device).toBe(-1);
      if (calls <= 2) throw busy(calls);
      return bound(request, 7);
    }));
    const device = attachSync(image, { onRetry: (event) => seen.push(event.attempt), retry: { attempts: 5, minDelayMs: 0, maxDelayMs: 1 } });
    expect(device.number).toBe(7);
    expect(seen).toEqual([1, 2]);
    expect(calls).toBe(3);
  });

  it('ENXIO on open and EAGAIN from the device lock are retried too', () => {
    const failures = [busy(3, 'open', 6), busy(3, 'flock', 11), busy(3, 'ioctl(LOOP_CONFIGURE)', 11)];
    vi.spyOn(native.attach, 'sync').mockImplementation(fakeAttach((request) => {
      const next = failures.shift();
      if (next) throw next;
      return bound(request, 3);
    }));
    expect(attachSync(image, { retry: { attempts: 4, minDelayMs: 0, maxDelayMs: 0 } }).number).toBe(3);
  });

  it('decides by the stage the addon reports, never by the text of its syscall label', () => {
    // A label renamed for people keeps its verdict; the same label from another stage does not get one.
    const renamed = LoopError.system(16, 'ioctl(LOOP_CONFIGURE) [renamed]', '/dev/loop4', { device: 4, stage: 'configure' });
    const failures = [renamed];
    vi.spyOn(native.attach, 'sync').mockImplementation(fakeAttach((request) => {
      const next = failures.shift();
      if (next) throw next;
      return bound(request, 4);
    }));
    expect(attachSync(image, { retry: { attempts: 3, minDelayMs: 0, maxDelayMs: 0 } }).number).toBe(4);
    const unstaged = LoopError.system(16, 'ioctl(LOOP_CONFIGURE)', '/dev/loop4', { device: 4 });
    vi.spyOn(native.attach, 'sync').mockImplementation(fakeAttach(() => {
      throw unstaged;
    }));
    expect(() => attachSync(image, { retry: { attempts: 3, minDelayMs: 0, maxDelayMs: 0 } })).toThrow(unstaged);
  });

  it('runs out of attempts with ERR_LOOP_BUSY, attempts and the last error as cause', () => {
    vi.spyOn(native.attach, 'sync').mockImplementation(fakeAttach(() => {
      throw busy(5);
    }));
    let thrown: LoopError | undefined;
    try {
      attachSync(image, { retry: { attempts: 3, minDelayMs: 0, maxDelayMs: 0 } });
    } catch (error) {
      thrown = error as LoopError;
    }
    expect(thrown).toMatchObject({ code: 'ERR_LOOP_BUSY', attempts: 3, device: 5 });
    expect(thrown?.cause).toMatchObject({ code: 'EBUSY', syscall: 'ioctl(LOOP_CONFIGURE)' });
    expect(native.attach.sync).toHaveBeenCalledTimes(3);
  });

  it('retry: false gives the first error itself', () => {
    vi.spyOn(native.attach, 'sync').mockImplementation(fakeAttach(() => {
      throw busy(5);
    }));
    expect(() => attachSync(image, { retry: false })).toThrow(expect.objectContaining({ code: 'EBUSY' }));
    expect(native.attach.sync).toHaveBeenCalledTimes(1);
  });

  it('a device the caller named is not retried when busy, and never cleared', () => {
    vi.spyOn(native.attach, 'sync').mockImplementation(fakeAttach(() => {
      throw busy(4);
    }));
    expect(() => attachSync(image, { device: 4 })).toThrow(expect.objectContaining({ code: 'EBUSY', path: '/dev/loop4' }));
    expect(native.attach.sync).toHaveBeenCalledTimes(1);
    expect(native.detach.sync).not.toHaveBeenCalled();
  });

  it('errors that are not races fail at once', () => {
    vi.spyOn(native.attach, 'sync').mockImplementation(fakeAttach(() => {
      throw LoopError.system(13, 'open', image);
    }));
    expect(() => attachSync(image)).toThrow(expect.objectContaining({ code: 'EACCES', path: image }));
    expect(native.attach.sync).toHaveBeenCalledTimes(1);
  });

  it('falls back to LOOP_SET_FD when LOOP_CONFIGURE is unknown, and remembers it', () => {
    const legacy: boolean[] = [];
    vi.spyOn(native.attach, 'sync').mockImplementation(fakeAttach((request) => {
      legacy.push(request.legacy);
      if (!request.legacy) throw busy(2, 'ioctl(LOOP_CONFIGURE)', 25); // ENOTTY
      return bound(request, 2);
    }));
    expect(attachSync(image).setupIoctl).toBe('LOOP_SET_FD');
    expect(attachSync(image).setupIoctl).toBe('LOOP_SET_FD');
    expect(legacy).toEqual([false, true, true]);
  });

  it('a setting the kernel dropped is an error, and the device is released again', () => {
    vi.spyOn(native.attach, 'sync').mockImplementation(fakeAttach((request) => bound(request, 6, { flags: request.flags & ~8 })));
    const detached: DetachRequest[] = [];
    vi.spyOn(native.detach, 'sync').mockImplementation(fakeDetach((request) => {
      detached.push(request);
      return { cleared: true, released: true, diskseq: 1006 };
    }));
    expect(() => attachSync(image, { partscan: true })).toThrow(
      expect.objectContaining({ code: 'ERR_LOOP_SETTING_IGNORED', message: expect.stringContaining('partscan did not take') }),
    );
    // Released through the identity of what it bound: path, number, no held fd, check, diskseq.
    expect(detached).toEqual([
      { path: '/dev/loop6', named: false, number: 6, fd: -1, checkIdentity: true, diskseq: 1006, backingDevice: 1, backingInode: 2, partitions: [] },
    ]);
  });

  it('attach(): a setting the kernel dropped rejects, and the device is released again', async () => {
    vi.spyOn(native.attach, 'async').mockImplementation(fakeAttachAsync(async (request) => bound(request, 1)));
    await attach(image); // the next attach makes its first attempt directly
    vi.spyOn(native.attach, 'async').mockImplementation(fakeAttachAsync(async (request) => bound(request, 6, { offset: 0 })));
    const detached: DetachRequest[] = [];
    vi.spyOn(native.detach, 'async').mockImplementation(fakeDetachAsync((request) => {
      detached.push(request);
      return { cleared: true, released: true, diskseq: 1006 };
    }));
    await expect(attach(image, { offset: 4096 })).rejects.toMatchObject({
      code: 'ERR_LOOP_SETTING_IGNORED',
      message: expect.stringContaining('offset is 0, not 4096'),
    });
    expect(detached).toEqual([
      { path: '/dev/loop6', named: false, number: 6, fd: -1, checkIdentity: true, diskseq: 1006, backingDevice: 1, backingInode: 2, partitions: [] },
    ]);
  });

  it('partscan: a table found by the first attempt is read, and the next attempt adds its partitions', async () => {
    const image = tempImagePath('retry-table.img');
    try {
      writeMbr(image, 8 * MiB, [{ startBytes: MiB, sizeBytes: 2 * MiB }]);
      for (const run of [async () => attachSync(image, { partscan: true }), () => attach(image, { partscan: true })]) {
        const requests: AttachRequest[] = [];
        const answer = (request: AttachRequest): AttachResult => {
          requests.push(request);
          return request.probeTable ? { ...bound(request, 0), number: 0, table: true } : bound(request, 4, { partitionErrors: [0] });
        };
        vi.spyOn(native.attach, 'sync').mockImplementation(fakeAttach(answer));
        vi.spyOn(native.attach, 'async').mockImplementation(fakeAttachAsync(async (request) => answer(request)));
        const device = await run();
        expect(device.number).toBe(4);
        expect(requests.map((request) => [request.probeTable, request.partitions])).toEqual([
          [true, []],
          [false, [{ number: 1, start: MiB, length: 2 * MiB }]],
        ]);
      }
    } finally {
      removeTempImage(image);
    }
  });

  it('byte counts reach the addon exact, as numbers and as bigints above 2^53', () => {
    const seen: { offset: number | bigint; sizeLimit: number | bigint }[] = [];
    vi.spyOn(native.attach, 'sync').mockImplementation(fakeAttach((request) => {
      seen.push({ offset: request.offset, sizeLimit: request.sizeLimit });
      return bound(request, 1);
    }));
    attachSync(image, { offset: 2 ** 53 - 1, sizeLimit: 4096 * 3 + 7 });
    attachSync(image, { offset: 2n ** 63n - 1n, sizeLimit: 2n ** 53n + 1n });
    expect(seen).toEqual([
      { offset: 2 ** 53 - 1, sizeLimit: 4096 * 3 + 7 },
      { offset: 2n ** 63n - 1n, sizeLimit: 2n ** 53n + 1n },
    ]);
  });

  it('attach(): a first attempt that loses the race goes on in the flow, with its retries', async () => {
    vi.spyOn(native.attach, 'async').mockImplementation(fakeAttachAsync(async (request) => bound(request, 1)));
    await attach(image); // the lane's control fd is open from here on: the next attach tries directly
    const seen: number[] = [];
    const controlFds: number[] = [];
    vi.spyOn(native.attach, 'async').mockImplementation(fakeAttachAsync(async (request) => {
      controlFds.push(request.controlFd);
      if (controlFds.length <= 2) throw busy(controlFds.length);
      return bound(request, 7);
    }));
    const device = await attach(image, { onRetry: (event) => seen.push(event.attempt), retry: { attempts: 5, minDelayMs: 0, maxDelayMs: 1 } });
    expect(device.number).toBe(7);
    expect(seen).toEqual([1, 2]);
    expect(controlFds).toEqual([42, 42, 42]);
  });

  it('attach(): a bug in the step (not a LoopError) rejects as it is, without retries', async () => {
    vi.spyOn(native.attach, 'async').mockImplementation(fakeAttachAsync(async (request) => bound(request, 1)));
    await attach(image);
    vi.mocked(native.attach.async).mockClear().mockRejectedValue(new TypeError('boom'));
    await expect(attach(image, { retry: { attempts: 5, minDelayMs: 0, maxDelayMs: 0 } })).rejects.toThrow(TypeError);
    expect(native.attach.async).toHaveBeenCalledTimes(1);
  });

  it('an AbortSignal stops a pending retry loop', async () => {
    vi.spyOn(native.attach, 'async').mockImplementation(fakeAttachAsync(async () => {
      throw busy(1);
    }));
    const controller = new AbortController();
    const pending = attach(image, { signal: controller.signal, retry: { attempts: 64, minDelayMs: 50, maxDelayMs: 50 } });
    setTimeout(() => controller.abort(new Error('stop')), 20);
    await expect(pending).rejects.toMatchObject({ code: 'ERR_LOOP_ABORTED' });
  });

  it('concurrent attach() calls take lanes: each in the kernel with its own control fd, at most LANES at once', async () => {
    let nextFd = 100;
    vi.spyOn(native.openControl, 'async').mockImplementation(async () => nextFd++);
    const inside = new Set<number>();
    let most = 0;
    let next = 0;
    vi.spyOn(native.attach, 'async').mockImplementation(
      fakeAttachAsync(async (request) => {
        // Two calls on one control fd at once would not exclude each other under flock.
        expect(inside.has(request.controlFd)).toBe(false);
        inside.add(request.controlFd);
        most = Math.max(most, inside.size);
        await new Promise((resolve) => setTimeout(resolve, 1));
        inside.delete(request.controlFd);
        return bound(request, next++);
      }),
    );
    const devices = await Promise.all(Array.from({ length: 20 }, () => attach(image)));
    expect(most).toBe(LANES);
    expect(new Set(devices.map((device) => device.number)).size).toBe(20);
  });

  it('without the control lock, concurrent attach() calls take turns in the process', async () => {
    let inside = 0;
    let most = 0;
    vi.spyOn(native.attach, 'async').mockImplementation(
      fakeAttachAsync(async (request) => {
        inside++;
        most = Math.max(most, inside);
        await new Promise((resolve) => setTimeout(resolve, 1));
        inside--;
        return bound(request, 0);
      }),
    );
    await Promise.all(Array.from({ length: 10 }, () => attach(image, { lockControl: false })));
    expect(most).toBe(1);
  });

  it('a failing call does not block the ones queued behind it', async () => {
    let calls = 0;
    vi.spyOn(native.attach, 'async').mockImplementation(fakeAttachAsync(async (request) => {
      if (calls++ === 0) throw LoopError.system(13, 'open', image);
      return bound(request, calls);
    }));
    const results = await Promise.allSettled([attach(image), attach(image), attach(image)]);
    // Which attach reaches the step first is the thread pool's to say (each opens its file first).
    expect(results.map((result) => result.status).sort()).toEqual(['fulfilled', 'fulfilled', 'rejected']);
  });
});

describe('detach retry policy', () => {
  it('retries EAGAIN ("still dirty") and EBUSY, not ERR_LOOP_REUSED', () => {
    const failures = [busy(2, 'ioctl(LOOP_CLR_FD)', 11), busy(2, 'ioctl(LOOP_CLR_FD)', 16)];
    vi.spyOn(native.detach, 'sync').mockImplementation(fakeDetach(() => {
      const next = failures.shift();
      if (next) throw next;
      return { cleared: true, released: true, diskseq: 5 };
    }));
    expect(detachSync('/dev/loop2', { retry: { attempts: 5, minDelayMs: 0, maxDelayMs: 0 } })).toEqual({ path: '/dev/loop2', wasBound: true, released: true });
    expect(native.detach.sync).toHaveBeenCalledTimes(3);

    vi.mocked(native.detach.sync).mockClear();
    vi.spyOn(native.detach, 'sync').mockImplementation(fakeDetach(() => {
      throw new LoopError('reused', { code: 'ERR_LOOP_REUSED', path: '/dev/loop2' });
    }));
    expect(() => detachSync(2)).toThrow(expect.objectContaining({ code: 'ERR_LOOP_REUSED' }));
    expect(native.detach.sync).toHaveBeenCalledTimes(1);
  });

  it('detach(): the first attempt through the Promise form, then the same retries in the flow', async () => {
    const failures = [busy(2, 'ioctl(LOOP_CLR_FD)', 11), busy(2, 'ioctl(LOOP_CLR_FD)', 16)];
    vi.spyOn(native.detach, 'async').mockImplementation(fakeDetachAsync(() => {
      const next = failures.shift();
      if (next) throw next;
      return { cleared: true, released: true, diskseq: 5 };
    }));
    await expect(detach('/dev/loop2', { retry: { attempts: 5, minDelayMs: 0, maxDelayMs: 0 } })).resolves.toEqual({
      path: '/dev/loop2',
      wasBound: true,
      released: true,
    });
    expect(native.detach.async).toHaveBeenCalledTimes(3);
    expect(native.detach.sync).not.toHaveBeenCalled();
  });
});

describe('close() of a held PARTSCAN device', () => {
  it("is released only once its partitions are gone: another opener's close under way has taken sysfs's loop/ away before them", async () => {
    for (const form of ['sync', 'async'] as const) {
      vi.spyOn(native.attach, 'sync').mockImplementation(fakeAttach((request) => bound(request, 6)));
      const device = attachSync(image, { partscan: true, hold: true });
      // The kernel's release at the other opener's close: loop/ is gone, the partition is still
      // there for the first two looks. Every other path is read as it is.
      const answer = <T>(value: T) => (form === 'sync' ? value : Promise.resolve(value));
      let looks = 0;
      const real = { readdir: io.readdir[form], exists: io.exists[form], readText: io.readText[form] };
      vi.spyOn(native.closeHeld, form).mockImplementation((() => answer(false)) as never);
      vi.spyOn(io.readdir, form).mockImplementation(((path: string) => (path === '/sys/block/loop6' ? answer(looks++ < 2 ? ['loop6p1', 'size'] : ['size']) : real.readdir(path))) as never);
      vi.spyOn(io.exists, form).mockImplementation(((path: string) => (path === '/sys/block/loop6/loop' ? answer(false) : real.exists(path))) as never);
      vi.spyOn(io.readText, form).mockImplementation(((path: string) => (path === '/sys/block/loop6/diskseq' ? answer('1006\n') : real.readText(path))) as never);
      const result = form === 'sync' ? device.closeSync() : await device.close();
      expect(result).toEqual({ path: '/dev/loop6', wasBound: true, released: true });
      expect(looks).toBe(3);
      vi.restoreAllMocks();
    }
  });
});

describe('a system error', () => {
  it('keeps what the errno says, and one that came without an errno is still a LoopError that says so', () => {
    expect(LoopError.system(16, 'ioctl(LOOP_CONFIGURE)', '/dev/loop0')).toMatchObject({ code: 'EBUSY', errno: -16, syscall: 'ioctl(LOOP_CONFIGURE)', path: '/dev/loop0' });
    const unknown = LoopError.system(0, 'open', '/dev/loop0', { stage: 'openDevice', device: 0 });
    expect(unknown).toBeInstanceOf(LoopError);
    expect(unknown).toMatchObject({ code: 'UNKNOWN', stage: 'openDevice', device: 0, path: '/dev/loop0' });
    expect(unknown.message).toMatch(/without an errno/);
  });
});
