// File-system steps Node's fs module does not offer (mknod), closing the fds the addon owns,
// and the cheap look for a partition table that partscan makes before every attach.
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <cerrno>

#include "addon.h"
#include "op.h"

namespace loopdev {

// mknod(path, S_IFBLK | mode, major:minor): creates a missing /dev/loopN (or partition)
// node where /dev is a plain tmpfs, as in many containers.
struct MknodOp {
  Failure failure;
  std::string path;
  unsigned mode, majorNumber, minorNumber;
  explicit MknodOp(const Napi::CallbackInfo& info)
      : path(ArgString(info, 0)),
        mode(static_cast<unsigned>(ArgInt(info, 1))),
        majorNumber(static_cast<unsigned>(ArgInt(info, 2))),
        minorNumber(static_cast<unsigned>(ArgInt(info, 3))) {}
  bool Run() {
    if (mknod(path.c_str(), S_IFBLK | (mode & 07777), makedev(majorNumber, minorNumber)) == 0) return true;
    return failure.Fail(errno, "mknod", path);
  }
  Napi::Value Result(Napi::Env env) { return env.Undefined(); }
};

// Closes an fd the addon handed out as owned (a held device); closing the last fd of a
// device with AUTOCLEAR unbinds it, so the kernel may do real work here.
struct CloseOp {
  Failure failure;
  int fd;
  explicit CloseOp(const Napi::CallbackInfo& info) : fd(ArgInt(info, 0)) {
    // Forget it on the main thread, before close, so teardown can never close it twice.
    if (!ReleaseFd(info.Env(), fd)) fd = -1;
  }
  bool Run() {
    if (fd < 0) return failure.Fail(EBADF, "close");
    return close(fd) == 0 || errno == EINTR || failure.Fail(errno, "close");
  }
  Napi::Value Result(Napi::Env env) { return env.Undefined(); }
};

// probeTable(path, fd, offset) -> whether the 512 bytes at `offset` end in the 55 AA boot
// signature, which every MBR, and so every GPT's protective MBR, carries. Without it there is
// no table to read, and attach({ partscan }) is spared the full reader (lib/partition-table.ts)
// and Node's fs calls, which cost more than the kernel steps of an attach. Reads from `fd`
// when it is not -1, else opens `path` read-only for the one pread.
struct ProbeTableOp {
  Failure failure;
  std::string path;
  int fd;
  uint64_t offset;
  bool hasSignature = false;
  explicit ProbeTableOp(const Napi::CallbackInfo& info) : path(ArgString(info, 0)), fd(ArgInt(info, 1)), offset(ArgU64(info, 2)) {}
  bool Run() {
    Fd opened;
    if (fd < 0) {
      // O_NONBLOCK: a FIFO must not hang the open (its pread then fails with ESPIPE).
      opened.reset(open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK));
      if (opened.get() < 0) return failure.Fail(errno, "open", path);
    }
    unsigned char sector[512];
    const ssize_t length = pread(fd < 0 ? opened.get() : fd, sector, sizeof sector, static_cast<off_t>(offset));
    if (length < 0) {
      // A FIFO or socket: attach would refuse it as well, so say it the same way.
      if (errno == ESPIPE) return failure.Refuse("ERR_LOOP_INVALID_BACKING", (path.empty() ? std::string("the file") : path) + " is not a regular file or a block device", path);
      return failure.Fail(errno, "read", path);
    }
    hasSignature = length == sizeof sector && sector[510] == 0x55 && sector[511] == 0xAA;
    return true;
  }
  Napi::Value Result(Napi::Env env) { return Napi::Boolean::New(env, hasSignature); }
};

void InitFs(Napi::Env env, Napi::Object exports) {
  Export<ProbeTableOp>(env, exports, "probeTable");
  Export<MknodOp>(env, exports, "mknod");
  Export<CloseOp>(env, exports, "closeOwned");
}

}  // namespace loopdev
