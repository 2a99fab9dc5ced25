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

void InitFs(Napi::Env env, Napi::Object exports) {
  Export<MknodOp>(env, exports, "mknod");
  Export<CloseOp>(env, exports, "closeOwned");
}

}  // namespace loopdev
