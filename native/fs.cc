// File-system steps Node's fs module does not offer: mknod, flock, and fds the addon owns
// (closed at environment teardown, so a terminated worker cannot leave one open).
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <cerrno>

#include "addon.h"
#include "op.h"

namespace loopdev {

// mknod(path, S_IFBLK | mode, major:minor): creates a missing /dev/loopN (or partition)
// node where /dev is a plain tmpfs, as in many containers.
struct MknodOp : Step {
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
struct CloseOp : Step {
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

// openOwned(path, flags) -> fd: an fd the addon owns, for lib/'s short-lived reads of a
// device or an image. An fd from Node's fs would outlive a worker terminated before its
// `finally` ran, and an fd on a loop device keeps an AUTOCLEAR device bound.
struct OpenOp : Step {
  std::string path;
  int flags;
  int fd = -1;
  explicit OpenOp(const Napi::CallbackInfo& info) : path(ArgString(info, 0)), flags(ArgInt(info, 1)) {}
  bool Run() {
    fd = open(path.c_str(), flags | O_CLOEXEC);
    return fd >= 0 || failure.Fail(errno, "open", path);
  }
  Napi::Value Result(Napi::Env env) { return Napi::Number::New(env, fd); }
  void Settle(Napi::Env env, bool delivered) {
    if (delivered) AdoptFd(env, fd);
    else Abandon();
  }
  void Abandon() { close(fd); }
};

// lockFile(path) -> fd: opens the file read-only and takes flock(LOCK_EX | LOCK_NB) on it;
// the lock lasts until the (owned) fd is closed. EWOULDBLOCK when someone else holds it:
// lib/ waits with timers, never a worker thread.
struct LockOp : Step {
  std::string path;
  int fd = -1;
  explicit LockOp(const Napi::CallbackInfo& info) : path(ArgString(info, 0)) {}
  bool Run() {
    // O_NONBLOCK: opening a FIFO must not hang (lib/ refuses it before it gets here anyway).
    Fd file(open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC));
    if (file.get() < 0) return failure.Fail(errno, "open", path);
    if (flock(file.get(), LOCK_EX | LOCK_NB) != 0) return failure.Fail(errno, "flock", path);
    fd = file.release();
    return true;
  }
  Napi::Value Result(Napi::Env env) { return Napi::Number::New(env, fd); }
  void Settle(Napi::Env env, bool delivered) {
    if (delivered) AdoptFd(env, fd);
    else Abandon();
  }
  void Abandon() { close(fd); }
};

void InitFs(Napi::Env env, Napi::Object exports) {
  Export<OpenOp>(env, exports, "openOwned");
  Export<LockOp>(env, exports, "lockFile");
  Export<MknodOp>(env, exports, "mknod");
  Export<CloseOp>(env, exports, "closeOwned");
}

}  // namespace loopdev
