// Changing a bound device in place. Each Op is one kernel step on a Target (see target.h: the
// device, checked to be bound and, for a handle, still its binding); lib/ validates first,
// reads the state back afterwards, retries and explains.
#include <fcntl.h>
#include <linux/blkpg.h>
#include <linux/fs.h>
#include <linux/loop.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "addon.h"
#include "layout.h"
#include "op.h"
#include "target.h"

namespace loopdev {

namespace {

// The part every change shares: its target, the fd it works on, the ioctl it makes.
struct ChangeStep : Step {
  Target target;
  Status status;
  explicit ChangeStep(const Args& args, size_t first) : target(args, first) {}

  // The device's fd, or -1 with failure set.
  int Open(Fd* opened) { return target.Open(opened, &status, &failure, Target::kMustBeBound); }

  bool Ioctl(int fd, unsigned long request, unsigned long argument, const char* name) {
    if (ioctl(fd, request, argument) == 0) return true;
    return failure.Fail(Stage::change, errno, name, target.path);
  }

  Napi::Value Result(Napi::Env env) { return env.Undefined(); }
};

}  // namespace

// setCapacity(target...): LOOP_SET_CAPACITY, the device re-reads its backing file's size.
struct SetCapacityOp : ChangeStep {
  explicit SetCapacityOp(const Args& args) : ChangeStep(args, TargetAt<Arg::setCapacity>()) {}
  bool Run() {
    Fd opened;
    const int fd = Open(&opened);
    return fd >= 0 && Ioctl(fd, LOOP_SET_CAPACITY, 0, "ioctl(LOOP_SET_CAPACITY)");
  }
};

// setDirectIO: LOOP_SET_DIRECT_IO, `on` or off.
struct SetDirectIOOp : ChangeStep {
  bool on;
  explicit SetDirectIOOp(const Args& args) : ChangeStep(args, TargetAt<Arg::setDirectIO>()), on(ArgBool(args, Arg::setDirectIO::on)) {}
  bool Run() {
    Fd opened;
    const int fd = Open(&opened);
    return fd >= 0 && Ioctl(fd, LOOP_SET_DIRECT_IO, on ? 1 : 0, "ioctl(LOOP_SET_DIRECT_IO)");
  }
};

// setBlockSize: LOOP_SET_BLOCK_SIZE of `bytes` (512 to the page size, a power of two).
struct SetBlockSizeOp : ChangeStep {
  int bytes;
  explicit SetBlockSizeOp(const Args& args) : ChangeStep(args, TargetAt<Arg::setBlockSize>()), bytes(ArgInt(args, Arg::setBlockSize::bytes, 512, 65536)) {}
  bool Run() {
    Fd opened;
    const int fd = Open(&opened);
    return fd >= 0 && Ioctl(fd, LOOP_SET_BLOCK_SIZE, static_cast<unsigned long>(bytes), "ioctl(LOOP_SET_BLOCK_SIZE)");
  }
};

// setStatus: LOOP_GET_STATUS64, the settings named in `changes` (StatusChange bits) replaced, LOOP_SET_STATUS64. The kernel
// takes only AUTOCLEAR and PARTSCAN of the flags, and cannot clear PARTSCAN.
struct SetStatusOp : ChangeStep {
  using A = Arg::setStatus;
  int changes;
  uint64_t offset, sizeLimit;
  uint32_t flags;
  std::string label;
  explicit SetStatusOp(const Args& args)
      : ChangeStep(args, TargetAt<A>()),
        changes(ArgInt(args, A::changes, 0, 31)),
        offset(ArgU64(args, A::offset)),
        sizeLimit(ArgU64(args, A::sizeLimit)),
        flags(static_cast<uint32_t>(ArgInt(args, A::flags, 0, 31))),
        label(ArgOptionalString(args, A::label, LO_NAME_SIZE - 1)) {}

  bool Run() {
    Fd opened;
    const int fd = Open(&opened);
    if (fd < 0) return false;
    struct loop_info64 info;
    memset(&info, 0, sizeof info);
    if (ioctl(fd, LOOP_GET_STATUS64, &info) != 0) return failure.Fail(errno, "ioctl(LOOP_GET_STATUS64)", target.path);
    if (changes & StatusChange::offset) info.lo_offset = offset;
    if (changes & StatusChange::sizeLimit) info.lo_sizelimit = sizeLimit;
    const auto set = [&](int change, uint32_t flag) {
      if (changes & change) info.lo_flags = (info.lo_flags & ~flag) | (flags & flag);
    };
    set(StatusChange::autoclear, LO_FLAGS_AUTOCLEAR);
    set(StatusChange::partscan, LO_FLAGS_PARTSCAN);
    if (changes & StatusChange::label) {
      memset(info.lo_file_name, 0, sizeof info.lo_file_name);
      memcpy(info.lo_file_name, label.data(), label.size());  // at most 63 bytes: checked when read
    }
    // Only the flags LOOP_SET_STATUS64 may set; READ_ONLY and DIRECT_IO stay as they are.
    info.lo_flags &= LOOP_SET_STATUS_SETTABLE_FLAGS | LO_FLAGS_READ_ONLY | LO_FLAGS_DIRECT_IO;
    if (ioctl(fd, LOOP_SET_STATUS64, &info) != 0) return failure.Fail(errno, "ioctl(LOOP_SET_STATUS64)", target.path);
    // Kernels before 5.0 kept stale pages cached across an offset or size change; systemd
    // flushes the buffer cache after one for that reason.
    if (changes & (StatusChange::offset | StatusChange::sizeLimit)) ioctl(fd, BLKFLSBUF, 0);
    return true;
  }
};

// changeBacking: LOOP_CHANGE_FD to a file opened
// read-only here (or the caller's fd). The kernel allows it only on a read-only device and a
// file of the same size. Then the device's page cache is dropped (BLKFLSBUF): kernels before
// 5.15 keep the old file's pages cached across the change (later ones drop them themselves, as
// a media change), so a read through the device, udev's probe's pages included, gave old bytes.
struct ChangeBackingOp : ChangeStep {
  int backingFd;
  std::string backingPath;
  explicit ChangeBackingOp(const Args& args)
      : ChangeStep(args, TargetAt<Arg::changeBacking>()),
        backingFd(ArgInt(args, Arg::changeBacking::backingFd, -1)),
        backingPath(ArgPath(args, Arg::changeBacking::backingPath)) {}

  bool Run() {
    Fd file;
    int fd = backingFd;
    if (fd < 0) {
      file.reset(OpenPath(backingPath, O_RDONLY | O_NONBLOCK, false));
      if (file.get() < 0) return failure.Fail(Stage::openBacking, errno, "open", backingPath);
      fd = file.get();
      if (fcntl(fd, F_SETFL, 0) != 0) return failure.Fail(errno, "fcntl", backingPath);
    }
    struct stat st;
    if (!CheckBackingType(fd, backingPath, &st, &failure)) return false;
    Fd opened;
    const int device = Open(&opened);
    if (device < 0 || !Ioctl(device, LOOP_CHANGE_FD, static_cast<unsigned long>(fd), "ioctl(LOOP_CHANGE_FD)")) return false;
    // Nothing is dirty on a read-only device, so this only drops pages: it cannot fail the change.
    ioctl(device, BLKFLSBUF, 0);
    return true;
  }
};

// rescanPartitions: BLKRRPART, so that the kernel drops the
// partitions of the old geometry (all of them, those added with BLKPG too) and adds what its
// own parsers find; then BLKPG_ADD_PARTITION for each partition given (lib/ read them from
// the file). out: one errno (or 0) per given partition. EINVAL from BLKRRPART: the device has
// no PARTSCAN, so the kernel has nothing to rescan.
struct RescanPartitionsOp : ChangeStep {
  std::vector<Partition> partitions;
  OutArray out;
  std::vector<int> errors;
  explicit RescanPartitionsOp(const Args& args)
      : ChangeStep(args, TargetAt<Arg::rescanPartitions>()),
        partitions(ArgPartitions(args, Arg::rescanPartitions::partitions)),
        out(args, Arg::rescanPartitions::out, partitions.size()) {}

  bool Run() {
    Fd opened;
    const int fd = Open(&opened);
    if (fd < 0) return false;
    if (ioctl(fd, BLKRRPART, 0) != 0 && errno != EINVAL) return failure.Fail(errno, "ioctl(BLKRRPART)", target.path);
    for (const Partition& partition : partitions) errors.push_back(Blkpg(fd, BLKPG_ADD_PARTITION, partition));
    return true;
  }

  void Persist(Napi::Env env) { out.Persist(env); }

  Napi::Value Result(Napi::Env env) {
    double* slots = out.Slots();
    for (size_t i = 0; i < errors.size(); i++) slots[i] = errors[i];
    return env.Undefined();
  }
};

void InitChange(Napi::Env env, Napi::Object exports) {
  Export<SetCapacityOp>(env, exports, "setCapacity");
  Export<SetDirectIOOp>(env, exports, "setDirectIO");
  Export<SetBlockSizeOp>(env, exports, "setBlockSize");
  Export<SetStatusOp>(env, exports, "setStatus");
  Export<ChangeBackingOp>(env, exports, "changeBacking");
  Export<RescanPartitionsOp>(env, exports, "rescanPartitions");
}

}  // namespace loopdev
