// The layouts of the Float64Arrays the addon returns, and the bits of attach's `mode`: each
// defined here once. The addon exports them as `layout` (slot names in order, mode bits by
// name), and lib/core/addon.ts, the test fake and the benchmark take every index from that
// export, so reordering a slot here cannot silently break a reader.
#pragma once

#include <cstddef>

namespace loopdev {

// A 64-bit value (an inode, a device number, a diskseq) takes two slots: its low 32 bits at
// its name, the high 32 bits at nameHigh right after it (a double is exact only to 2^53).

// attach -> the bound device's status, then one errno (or 0) per requested partition.
// `table`: a probe was asked and found a partition table, so nothing was attached.
#define LOOPDEV_ATTACH_SLOTS(X)                                                                        \
  X(number) X(major) X(minor) X(backingDevice) X(backingDeviceHigh) X(backingInode) X(backingInodeHigh) \
  X(offset) X(sizeLimit) X(flags) X(size) X(sectorSize) X(diskseq) X(diskseqHigh) X(fd) X(legacy) X(table)

// detach -> what LOOP_CLR_FD did. `partscan`: the device had PARTSCAN, so its release is over
// only when its partitions are gone too.
#define LOOPDEV_DETACH_SLOTS(X) X(cleared) X(released) X(diskseq) X(diskseqHigh) X(partscan)

// list -> per device these, then three numbers (number, start, size) per partition.
#define LOOPDEV_LIST_SLOTS(X)                                                                          \
  X(number) X(major) X(minor) X(backingDevice) X(backingDeviceHigh) X(backingInode) X(backingInodeHigh) \
  X(offset) X(sizeLimit) X(flags) X(size) X(sectorSize) X(diskseq) X(diskseqHigh) X(fromSysfs) X(partitionCount)

// attach's `mode` argument: how the attempt goes.
#define LOOPDEV_ATTACH_MODES(X)                                                       \
  X(legacy, 1)     /* LOOP_SET_FD + LOOP_SET_STATUS64 instead of LOOP_CONFIGURE */    \
  X(keepFd, 2)     /* hand the device fd to the caller (hold) */                      \
  X(lockControl, 4) /* flock /dev/loop-control from GET_FREE to the end of configure */ \
  X(probeTable, 8) /* look for a partition table first; if found, attach nothing */ \
  X(directIOIfPossible, 16) /* direct I/O when the backing file allows it, else buffered */ \
  X(detachOnExit, 32) /* register the device for the thread's teardown as it is delivered */

// setStatus's `changes` argument: which settings of a bound device it changes.
#define LOOPDEV_STATUS_CHANGES(X) X(offset, 1) X(sizeLimit, 2) X(autoclear, 4) X(partscan, 8) X(label, 16)

// The step of an operation a failure comes from (Failure::stage, LoopError's `stage`): what
// lib/ decides retries and repairs by, so that the text of a syscall label is only for people.
#define LOOPDEV_STAGES(X)                                                                  \
  X(none)           /* not set: judged by its code alone */                                \
  X(openBacking)    /* opening the backing path */                                         \
  X(backing)        /* looking at the backing file (fstat, the table probe) */             \
  X(lockControl)    /* flock of /dev/loop-control */                                       \
  X(getFree)        /* LOOP_CTL_GET_FREE */                                                \
  X(openDevice)     /* opening /dev/loopN (ENOENT: no node yet; ENXIO: being torn down) */ \
  X(lockDevice)     /* flock of the device (someone else configures or uses it) */         \
  X(configure)      /* LOOP_CONFIGURE or LOOP_SET_FD (EBUSY: bound by someone else) */     \
  X(configureLegacy) /* the settings after LOOP_SET_FD (LOOP_SET_STATUS64 and friends) */   \
  X(scanPartitions) /* setting PARTSCAN after the configure */                             \
  X(readBack)       /* LOOP_GET_STATUS64 and friends after the configure */                \
  X(partitions)     /* BLKPG */                                                            \
  X(clear)          /* LOOP_CLR_FD */                                                      \
  X(change)         /* the ioctl of a change of a bound device */

#define LOOPDEV_SLOT_ENUM(name) name,
enum class AttachSlot : int { LOOPDEV_ATTACH_SLOTS(LOOPDEV_SLOT_ENUM) kCount };
enum class DetachSlot : int { LOOPDEV_DETACH_SLOTS(LOOPDEV_SLOT_ENUM) kCount };
enum class ListSlot : int { LOOPDEV_LIST_SLOTS(LOOPDEV_SLOT_ENUM) kCount };
enum class Stage : int { LOOPDEV_STAGES(LOOPDEV_SLOT_ENUM) kCount };
#undef LOOPDEV_SLOT_ENUM

// AttachMode::legacy and so on.
#define LOOPDEV_MODE_ENUM(name, bit) name = bit,
namespace AttachMode {
enum : int { LOOPDEV_ATTACH_MODES(LOOPDEV_MODE_ENUM) };
#define LOOPDEV_MODE_OR(name, bit) | bit
constexpr int kAll = 0 LOOPDEV_ATTACH_MODES(LOOPDEV_MODE_OR);
#undef LOOPDEV_MODE_OR
}
namespace StatusChange {
enum : int { LOOPDEV_STATUS_CHANGES(LOOPDEV_MODE_ENUM) };
}
#undef LOOPDEV_MODE_ENUM

template <class Slot>
constexpr size_t Count() {
  return static_cast<size_t>(Slot::kCount);
}

// out[At(Slot::name)]: an enum class slot as an index.
template <class Slot>
constexpr size_t At(Slot slot) {
  return static_cast<size_t>(slot);
}

}  // namespace loopdev
