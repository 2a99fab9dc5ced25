// File-system steps Node's fs module does not offer: mknod, flock, and fds the addon owns
// (closed at environment teardown, so a terminated worker cannot leave one open).
#include <fcntl.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/sendfile.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <cerrno>
#include <vector>

#include "addon.h"
#include "exit.h"
#include "status.h"
#include "op.h"

namespace loopdev {

// mknod(path, S_IFBLK | mode, major:minor): creates a missing /dev/loopN (or partition)
// node where /dev is a plain tmpfs, as in many containers.
struct MknodOp : Step {
  std::string path;
  unsigned mode, majorNumber, minorNumber;
  explicit MknodOp(const Args& args)
      : path(ArgString(args, 0)),
        mode(static_cast<unsigned>(ArgInt(args, 1))),
        majorNumber(static_cast<unsigned>(ArgInt(args, 2))),
        minorNumber(static_cast<unsigned>(ArgInt(args, 3))) {}
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
  explicit CloseOp(const Args& args) : fd(ArgInt(args, 0)) {
    // Forget it on the main thread, before close, so teardown can never close it twice.
    if (!ReleaseFd(args.Env(), fd)) fd = -1;
  }
  bool Run() {
    if (fd < 0) return failure.Fail(EBADF, "close");
    return close(fd) == 0 || errno == EINTR || failure.Fail(errno, "close");
  }
  Napi::Value Result(Napi::Env env) { return env.Undefined(); }
};

// closeHeld(fd, number) -> whether loopN is still bound after closing a held device's fd. With
// AUTOCLEAR, that close is usually the last and unbinds the device before close() returns;
// sysfs is asked in the same step (it opens nothing, so it cannot delay a release).
struct CloseHeldOp : CloseOp {
  uint32_t number;
  bool bound = false;
  explicit CloseHeldOp(const Args& args) : CloseOp(args), number(static_cast<uint32_t>(ArgInt(args, 1))) {}
  bool Run() {
    if (!CloseOp::Run()) return false;
    bound = SysfsBound(number);
    return true;
  }
  Napi::Value Result(Napi::Env env) { return Napi::Boolean::New(env, bound); }
  // The device's last holder let go: the kernel unbinds it (now, or at the last close of
  // whoever else has it open), so nothing is left for detachOnExit to do.
  void Settle(Napi::Env env, bool) { ForgetAtExit(env, static_cast<int>(number)); }
};

// openOwned(path, flags, noFollow) -> fd: an fd the addon owns, for lib/'s short-lived reads of a
// device or an image. An fd from Node's fs would outlive a worker terminated before its
// `finally` ran, and an fd on a loop device keeps an AUTOCLEAR device bound.
struct OpenOp : FdStep {
  std::string path;
  int flags;
  bool noFollow;
  explicit OpenOp(const Args& args) : path(ArgString(args, 0)), flags(ArgInt(args, 1)), noFollow(ArgBool(args, 2)) {}
  bool Run() {
    fd = OpenPath(path, flags, noFollow);
    return fd >= 0 || failure.Fail(errno, "open", path);
  }
};

// lockFile(path, noFollow) -> fd: opens the file read-only and takes flock(LOCK_EX | LOCK_NB) on it;
// the lock lasts until the (owned) fd is closed. EWOULDBLOCK when someone else holds it:
// lib/ waits with timers, never a worker thread.
struct LockOp : FdStep {
  std::string path;
  bool noFollow;
  explicit LockOp(const Args& args) : path(ArgString(args, 0)), noFollow(ArgBool(args, 1)) {}
  bool Run() {
    // O_NONBLOCK: opening a FIFO must not hang (lib/ refuses it before it gets here anyway).
    Fd file(OpenPath(path, O_RDONLY | O_NONBLOCK, noFollow));
    if (file.get() < 0) return failure.Fail(errno, "open", path);
    if (flock(file.get(), LOCK_EX | LOCK_NB) != 0) return failure.Fail(errno, "flock", path);
    fd = file.release();
    return true;
  }
};

// memoryCopy(path, backingFd, bytes?, name) -> fd: a sealed memfd holding a copy of the file
// (or of `bytes`), to attach instead of it (systemd's --in-memory): the file can then be
// deleted or replaced, and writes through the device never reach it. Sealed against
// shrinking and growing, so that the device's size cannot change under it.
struct MemoryCopyOp : FdStep {
  std::string path;
  int backingFd;
  std::vector<char> bytes;
  bool fromBytes;
  std::string name;
  explicit MemoryCopyOp(const Args& args)
      : path(ArgString(args, 0)), backingFd(ArgInt(args, 1)), fromBytes(args[2].IsTypedArray()), name(ArgString(args, 3)) {
    if (fromBytes) {
      Napi::TypedArray array = args[2].As<Napi::TypedArray>();
      const char* data = static_cast<const char*>(array.ArrayBuffer().Data()) + array.ByteOffset();
      bytes.assign(data, data + array.ByteLength());
    }
  }

  bool Run() {
    Fd memory(memfd_create(name.c_str(), MFD_CLOEXEC | MFD_ALLOW_SEALING));
    if (memory.get() < 0) return failure.Fail(errno, "memfd_create");
    if (fromBytes) {
      for (size_t done = 0; done < bytes.size();) {
        const ssize_t wrote = write(memory.get(), bytes.data() + done, bytes.size() - done);
        if (wrote < 0 && errno != EINTR) return failure.Fail(errno, "write", "memfd");
        if (wrote > 0) done += static_cast<size_t>(wrote);
      }
    } else {
      Fd opened;
      int source = backingFd;
      if (source < 0) {
        opened.reset(open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC));
        if (opened.get() < 0) return failure.Fail(errno, "open", path);
        source = opened.get();
      }
      struct stat st;
      if (fstat(source, &st) != 0) return failure.Fail(errno, "fstat", path);
      if (!S_ISREG(st.st_mode)) return failure.Refuse("ERR_LOOP_INVALID_BACKING", path + " is not a regular file (inMemory copies one)", path);
      off_t position = 0;
      while (position < st.st_size) {
        // copy_file_range between two files; sendfile where the kernel cannot (older kernels).
        ssize_t copied = copy_file_range(source, &position, memory.get(), nullptr, static_cast<size_t>(st.st_size - position), 0);
        if (copied < 0 && (errno == EXDEV || errno == EINVAL || errno == ENOSYS || errno == EOPNOTSUPP)) {
          copied = sendfile(memory.get(), source, &position, static_cast<size_t>(st.st_size - position));
        }
        if (copied < 0 && errno != EINTR) return failure.Fail(errno, "copy_file_range", path);
        if (copied == 0) break;  // the file shrank meanwhile
      }
    }
    if (fcntl(memory.get(), F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) != 0) return failure.Fail(errno, "fcntl(F_ADD_SEALS)", "memfd");
    fd = memory.release();
    return true;
  }
};

void InitFs(Napi::Env env, Napi::Object exports) {
  Export<MemoryCopyOp>(env, exports, "memoryCopy");
  Export<OpenOp>(env, exports, "openOwned");
  Export<LockOp>(env, exports, "lockFile");
  Export<MknodOp>(env, exports, "mknod");
  Export<CloseOp>(env, exports, "closeOwned");
  Export<CloseHeldOp>(env, exports, "closeHeld");
}

}  // namespace loopdev
