// What the kernel says about one loop device, read with ioctls on an open fd.
#pragma once

#include <linux/fs.h>

#include <cstdint>
#include <vector>

namespace loopdev {

constexpr unsigned kLoopMajor = 7;

struct Status {
  bool bound = false;
  unsigned major = 0;
  unsigned minor = 0;
  uint32_t number = 0;
  uint64_t backingDevice = 0;  // st_dev of the backing file
  uint64_t backingInode = 0;
  uint64_t offset = 0;
  uint64_t sizeLimit = 0;
  uint32_t flags = 0;
  char label[65] = {0};        // lo_file_name: a free label, not the real path
  uint64_t size = 0;           // bytes the device exposes
  uint32_t sectorSize = 0;     // logical block size
  uint64_t diskseq = 0;        // 0 when the kernel has no BLKGETDISKSEQ
};

// BLKGETDISKSEQ (5.15+): older headers lack it.
#ifndef BLKGETDISKSEQ
#define BLKGETDISKSEQ _IOR(0x12, 128, __u64)
#endif

// Checks that fd is the whole disk of loop device `expected` (-1: of any loop device), so that
// no loop ioctl reaches anything else: a block device of major 7 whose minor starts a device's
// range. (With loop.max_part, partitions share major 7, and an ioctl on a partition acts on its
// whole disk; a container's /dev is a writable tmpfs where any node may carry any name.) Fills
// status's major, minor and number. Returns 0, ENOTBLK for anything else, or fstat's errno.
int CheckLoopDevice(int fd, Status* status, int expected);

// How much ReadStatus asks: the binding alone (LOOP_GET_STATUS64 and BLKGETDISKSEQ, what
// attach and detach need on their hot path) or also the geometry (BLKGETSIZE64, BLKSSZGET).
enum class Detail { kBinding, kFull };

// Fills status from LOOP_GET_STATUS64 (whose lo_number must be status->number, as
// CheckLoopDevice found it: ENOTBLK otherwise), BLKGETDISKSEQ and, with Detail::kFull, BLKGETSIZE64
// and BLKSSZGET. An unbound device is not an error: status->bound is false. On failure
// returns the errno and sets *syscall.
int ReadStatus(int fd, Status* status, const char** syscall, Detail detail = Detail::kFull);

// Whether the device bound on fd has PARTSCAN (false when it is unbound): its release is over
// only when its partitions are gone too (see SysfsReleased). Asked before LOOP_CLR_FD: after it,
// a device the kernel counted no other opener of answers nothing more (Lo_rundown since 5.18,
// unbound at once before that).
bool HasPartscan(int fd);

// Whether loopN is bound, from sysfs (opens nothing, so it cannot delay a release).
bool SysfsBound(uint32_t number);

// Whether loopN exists at all (its sysfs directory), bound or not.
bool SysfsDeviceExists(uint32_t number);

// Whether loopN's release is over, from sysfs: not bound, and, for a device that had PARTSCAN,
// its partitions gone too (the kernel removes loop/ first and drops them after it).
bool SysfsReleased(uint32_t number, bool partscan);

// The partitions sysfs shows under loopN (loopNp1 -> 1, ...), in no particular order.
std::vector<int> SysfsPartitions(uint32_t number);

}  // namespace loopdev
