// What the kernel says about one loop device, read with ioctls on an open fd.
#pragma once

#include <napi.h>

#include <cstdint>

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

// Checks that fd is a loop block device (major 7), so no loop ioctl reaches anything else.
// Returns 0, ENOTBLK for anything else, or the errno of fstat.
int CheckLoopDevice(int fd, Status* status);

// How much ReadStatus asks: the binding alone (LOOP_GET_STATUS64 and BLKGETDISKSEQ, what
// attach and detach need on their hot path) or also the geometry (BLKGETSIZE64, BLKSSZGET).
enum class Detail { kBinding, kFull };

// Fills status from LOOP_GET_STATUS64, BLKGETDISKSEQ and, with Detail::kFull, BLKGETSIZE64
// and BLKSSZGET. An unbound device is not an error: status->bound is false. On failure
// returns the errno and sets *syscall.
int ReadStatus(int fd, Status* status, const char** syscall, Detail detail = Detail::kFull);

// Whether loopN is bound, from sysfs (opens nothing, so it cannot delay a release).
bool SysfsBound(uint32_t number);

// The slots of the Float64Array that attach fills (lib/native.ts reads the same names from
// `attachSlots`, checked at load); partition errors follow the named slots. `table`: 1 when
// a probe was asked and found a partition table, so that nothing was attached (see AttachOp).
#define LOOPDEV_ATTACH_SLOTS(X)                                                                 \
  X(number) X(major) X(minor) X(backingDevice) X(backingInode) X(offset) X(sizeLimit) X(flags) \
  X(size) X(sectorSize) X(diskseq) X(fd) X(legacy) X(table)
enum AttachSlot : int {
#define LOOPDEV_SLOT_ENUM(name) kAttach_##name,
  LOOPDEV_ATTACH_SLOTS(LOOPDEV_SLOT_ENUM)
#undef LOOPDEV_SLOT_ENUM
  kAttachSlots
};

// The slots list gives for each device (then 3 numbers per partition).
#define LOOPDEV_LIST_SLOTS(X)                                                                   \
  X(number) X(major) X(minor) X(backingDevice) X(backingInode) X(offset) X(sizeLimit) X(flags) \
  X(size) X(sectorSize) X(diskseq) X(fromSysfs) X(partitionCount)
enum ListSlot : int {
#define LOOPDEV_SLOT_ENUM(name) kList_##name,
  LOOPDEV_LIST_SLOTS(LOOPDEV_SLOT_ENUM)
#undef LOOPDEV_SLOT_ENUM
  kListSlots
};

// The slots detach fills.
#define LOOPDEV_DETACH_SLOTS(X) X(cleared) X(released) X(diskseq)
enum DetachSlot : int {
#define LOOPDEV_SLOT_ENUM(name) kDetach_##name,
  LOOPDEV_DETACH_SLOTS(LOOPDEV_SLOT_ENUM)
#undef LOOPDEV_SLOT_ENUM
  kDetachSlots
};

// The numbers attach and detach take. They are not arguments: lib/steps.ts writes them, by
// the names in `attachArgs` and `detachArgs` (checked at load), into `stepNumbers`, a
// Float64Array the addon made at load and reads through a pointer, as Node's fs binding
// shares its stat array. A JavaScript argument per number cost two N-API calls, a typed
// array argument one that asks V8 for its buffer on every call. 64-bit byte counts come as
// two 32-bit halves, so that they stay exact above 2^53.
#define LOOPDEV_ATTACH_ARGS(X) \
  X(controlFd) X(device) X(backingFd) X(offsetHigh) X(offsetLow) X(sizeLimitHigh) X(sizeLimitLow) X(flags) X(sectorSize) X(mode)
enum AttachArg : int {
#define LOOPDEV_SLOT_ENUM(name) kAttachArg_##name,
  LOOPDEV_ATTACH_ARGS(LOOPDEV_SLOT_ENUM)
#undef LOOPDEV_SLOT_ENUM
  kAttachArgs
};

#define LOOPDEV_DETACH_ARGS(X) X(number) X(heldFd) X(checkIdentity) X(diskseq) X(backingDevice) X(backingInode)
enum DetachArg : int {
#define LOOPDEV_SLOT_ENUM(name) kDetachArg_##name,
  LOOPDEV_DETACH_ARGS(LOOPDEV_SLOT_ENUM)
#undef LOOPDEV_SLOT_ENUM
  kDetachArgs
};

constexpr size_t kStepNumbers = 16;
static_assert(kAttachArgs <= kStepNumbers && kDetachArgs <= kStepNumbers, "stepNumbers is too short");

}  // namespace loopdev
