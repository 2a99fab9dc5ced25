// The order of each step's arguments, the layouts of the Float64Arrays the addon returns, and
// the bits of attach's `mode`: each defined here once. The addon exports them as `layout`
// (argument and slot names in order, mode bits by name); native readers index by these names,
// and lib/core/addon.ts, the test fake and the benchmark take every index from that export
// (test/addon-layout.test.ts holds lib/core/addon.ts's typed tuples to it), so reordering an
// argument or a slot here cannot silently pass or read a value in the wrong place.
#pragma once

#include <cstddef>

namespace loopdev {

// Each step's arguments, in the order JavaScript passes them (op.h: plain positional values,
// the cheapest call N-API has). A step reads them as Arg::step::name; one exported without an
// entry here fails at load (see Export() in op.h).
//
// The device a step on a bound device works on (target.h): first, as one block, in every step
// that takes one, so that Target reads it by these names from the step's Arg::step::number.
#define LOOPDEV_TARGET_ARGS(X) X(number) X(path) X(heldFd) X(checkIdentity) X(diskseq) X(backingDevice) X(backingInode)

#define LOOPDEV_ARGS_openControl(X)
#define LOOPDEV_ARGS_addDevice(X) X(controlFd) X(number)
#define LOOPDEV_ARGS_removeDevice(X) X(controlFd) X(number)
#define LOOPDEV_ARGS_attach(X)                                                                     \
  X(controlFd) X(device) X(backingFd) X(backingPath) X(offset) X(sizeLimit) X(flags) X(sectorSize) \
  X(label) X(mode) X(partitions) X(out)
#define LOOPDEV_ARGS_detach(X) LOOPDEV_TARGET_ARGS(X) X(partitions) X(out)
#define LOOPDEV_ARGS_list(X) X(only)
#define LOOPDEV_ARGS_mknod(X) X(path) X(mode) X(major) X(minor)
#define LOOPDEV_ARGS_openOwned(X) X(path) X(flags) X(noFollow)
#define LOOPDEV_ARGS_openBacking(X) X(path) X(readOnly) X(noFollow)
#define LOOPDEV_ARGS_lockFile(X) X(fd)
#define LOOPDEV_ARGS_memoryCopy(X) X(path) X(backingFd) X(bytes) X(name)
#define LOOPDEV_ARGS_setCapacity(X) LOOPDEV_TARGET_ARGS(X)
#define LOOPDEV_ARGS_setDirectIO(X) LOOPDEV_TARGET_ARGS(X) X(on)
#define LOOPDEV_ARGS_setBlockSize(X) LOOPDEV_TARGET_ARGS(X) X(bytes)
#define LOOPDEV_ARGS_setStatus(X) LOOPDEV_TARGET_ARGS(X) X(changes) X(offset) X(sizeLimit) X(flags) X(label)
#define LOOPDEV_ARGS_changeBacking(X) LOOPDEV_TARGET_ARGS(X) X(backingFd) X(backingPath)
#define LOOPDEV_ARGS_rescanPartitions(X) LOOPDEV_TARGET_ARGS(X) X(partitions) X(out)
#define LOOPDEV_ARGS_closeOwned(X) X(fd)
#define LOOPDEV_ARGS_closeHeld(X) X(fd) X(number)
#define LOOPDEV_ARGS_registerOnExit(X) LOOPDEV_TARGET_ARGS(X) X(partitions)
#define LOOPDEV_ARGS_exitCleanup(X)
#define LOOPDEV_ARGS_makeTempDir(X) X(prefix)
#define LOOPDEV_ARGS_removeTempDir(X) X(path)
#define LOOPDEV_ARGS_mount(X) X(source) X(target) X(fstype) X(flags) X(data) X(unmountAtExit)
#define LOOPDEV_ARGS_unmount(X) X(target) X(flags)
#define LOOPDEV_ARGS_reap(X) LOOPDEV_TARGET_ARGS(X)

// Every step, by the name it is exported as; S(step) is given LOOPDEV_ARGS_step.
#define LOOPDEV_STEPS(S)                                                                                 \
  S(openControl) S(addDevice) S(removeDevice) S(attach) S(detach) S(list) S(mknod) S(openOwned)          \
  S(openBacking) S(lockFile) S(memoryCopy) S(setCapacity) S(setDirectIO) S(setBlockSize) S(setStatus)    \
  S(changeBacking) S(rescanPartitions) S(closeOwned) S(closeHeld) S(registerOnExit) S(exitCleanup)       \
  S(makeTempDir) S(removeTempDir) S(mount) S(unmount) S(reap)

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

// Arg::attach::offset and so on: each step's argument indices by name, and kCount. Structs, not
// namespaces, so that a reader shared by steps (Target, ControlOp) can take the step as a type.
#define LOOPDEV_ARG_ENUM(name) name,
#define LOOPDEV_STEP_ARGS(step) \
  struct step {                 \
    enum : size_t { LOOPDEV_ARGS_##step(LOOPDEV_ARG_ENUM) kCount }; \
  };
namespace Arg {
struct target {
  enum : size_t { LOOPDEV_TARGET_ARGS(LOOPDEV_ARG_ENUM) kCount };
};
LOOPDEV_STEPS(LOOPDEV_STEP_ARGS)
}  // namespace Arg
#undef LOOPDEV_STEP_ARGS
#undef LOOPDEV_ARG_ENUM

// Where a step's target block starts, checked to be LOOPDEV_TARGET_ARGS whole and in order.
template <class StepArgs>
constexpr size_t TargetAt() {
  constexpr size_t first = StepArgs::number;
  static_assert(StepArgs::path == first + Arg::target::path && StepArgs::heldFd == first + Arg::target::heldFd &&
                    StepArgs::checkIdentity == first + Arg::target::checkIdentity &&
                    StepArgs::diskseq == first + Arg::target::diskseq &&
                    StepArgs::backingDevice == first + Arg::target::backingDevice &&
                    StepArgs::backingInode == first + Arg::target::backingInode,
                "a step takes its target as LOOPDEV_TARGET_ARGS, in one block");
  return first;
}

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
