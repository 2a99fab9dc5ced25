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
#include "sys.h"

namespace loopdev {

// mknod(path, S_IFBLK | mode, major:minor): creates a missing /dev/loopN (or partition)
// node where /dev is a plain tmpfs, as in many containers.
struct MknodOp : Step {
  std::string path;
  unsigned mode, majorNumber, minorNumber;
  explicit MknodOp(const Args& args)
      : path(ArgPath(args, Arg::mknod::path)),
        mode(static_cast<unsigned>(ArgInt(args, Arg::mknod::mode, 0, 07777))),
        majorNumber(static_cast<unsigned>(ArgInt(args, Arg::mknod::major, 0, 0xfff))),
        minorNumber(static_cast<unsigned>(ArgInt(args, Arg::mknod::minor, 0, 0xfffff))) {}
  bool Run() {
    if (Mknod(path.c_str(), S_IFBLK | (mode & 07777), makedev(majorNumber, minorNumber)) == 0) return true;
    return failure.Fail(errno, "mknod", path);
  }
  Napi::Value Result(Napi::Env env) { return env.Undefined(); }
};

// Closes an fd the addon handed out as owned (a held device); closing the last fd of a
// device with AUTOCLEAR unbinds it, so the kernel may do real work here.
struct CloseOp : Step {
  // Taken from the owned set on the main thread, so that teardown can never close it a second
  // time; from then on this step owns it, and closes it even if Run() never runs (a call
  // queued when its thread is torn down).
  Fd fd;
  // `at`: where the fd is among the step's arguments (closeHeld reuses this step).
  explicit CloseOp(const Args& args, size_t at = Arg::closeOwned::fd) {
    const int number = ArgInt(args, at, 0);
    if (ReleaseFd(args.Env(), number)) fd.reset(number);
  }
  bool Run() {
    if (fd.get() < 0) return failure.Fail(EBADF, "close");
    return close(fd.release()) == 0 || errno == EINTR || failure.Fail(errno, "close");
  }
  Napi::Value Result(Napi::Env env) { return env.Undefined(); }
};

// closeHeld -> whether loopN (`number`) is still bound after closing a held device's fd. With
// AUTOCLEAR, that close is usually the last and unbinds the device before close() returns;
// sysfs is asked in the same step (it opens nothing, so it cannot delay a release).
struct CloseHeldOp : Step {
  uint32_t number;
  CloseOp closing;  // after `number`: the fd is taken once every argument has been read
  bool bound = false;
  explicit CloseHeldOp(const Args& args) : number(static_cast<uint32_t>(ArgInt(args, Arg::closeHeld::number, 0, 0xfffff))), closing(args, Arg::closeHeld::fd) {}
  bool Run() {
    if (!closing.Run()) {
      failure = closing.failure;
      return false;
    }
    bound = SysfsBound(number);
    return true;
  }
  Napi::Value Result(Napi::Env env) { return Napi::Boolean::New(env, bound); }
  // The device's last holder let go: the kernel unbinds it (now, or at the last close of
  // whoever else has it open), so nothing is left for detachOnExit to do.
  void Settle(Napi::Env env, bool) { ForgetAtExit(env, static_cast<int>(number)); }
};

// openOwned -> fd: an fd the addon owns, for lib/'s short-lived reads of a
// device or an image. An fd from Node's fs would outlive a worker terminated before its
// `finally` ran, and an fd on a loop device keeps an AUTOCLEAR device bound.
struct OpenOp : FdStep {
  std::string path;
  int flags;
  bool noFollow;
  explicit OpenOp(const Args& args) : path(ArgPath(args, Arg::openOwned::path)), flags(ArgInt(args, Arg::openOwned::flags)), noFollow(ArgBool(args, Arg::openOwned::noFollow)) {}
  bool Run() {
    fd = OpenPath(path, flags, noFollow);
    return fd >= 0 || failure.Fail(errno, noFollow ? "openat2" : "open", path);
  }
};

// openBacking -> fd: the backing file of one attach, opened once (an
// owned fd): every attempt, the partition table's reader, the sector size probe, reuse's lock
// and an in-memory copy use it, so that a rename meanwhile cannot give them another file.
// Refused here unless the kernel can bind it, so that nothing reads from a FIFO.
struct OpenBackingOp : FdStep {
  std::string path;
  bool readOnly, noFollow;
  explicit OpenBackingOp(const Args& args) : path(ArgPath(args, Arg::openBacking::path)),
        readOnly(ArgBool(args, Arg::openBacking::readOnly)),
        noFollow(ArgBool(args, Arg::openBacking::noFollow)) {}
  bool Run() {
    // O_NONBLOCK so that a FIFO cannot hang a read-only open (it is refused just below); the
    // flag is cleared again before anything reads or the kernel gets the file.
    Fd file(OpenPath(path, readOnly ? O_RDONLY | O_NONBLOCK : O_RDWR, noFollow));
    if (file.get() < 0) return failure.Fail(Stage::openBacking, errno, noFollow ? "openat2" : "open", path);
    struct stat st;
    if (!CheckBackingType(file.get(), path, &st, &failure)) return false;
    if (readOnly && fcntl(file.get(), F_SETFL, 0) != 0) return failure.Fail(Stage::openBacking, errno, "fcntl", path);
    fd = file.release();
    return true;
  }
};

// lockFile(fd) -> fd: the file behind `fd` opened again (its own open file, through
// /proc/self/fd: no path is resolved again) with flock(LOCK_EX | LOCK_NB) taken on it; the
// lock lasts until the (owned) fd is closed. EWOULDBLOCK when someone else holds it: lib/
// waits with timers, never a worker thread.
struct LockOp : FdStep {
  int file;
  explicit LockOp(const Args& args) : file(ArgInt(args, Arg::lockFile::fd, 0)) {}
  bool Run() {
    const std::string path = "/proc/self/fd/" + std::to_string(file);
    // O_NONBLOCK: only regular files and block devices get here, but an open must never hang.
    Fd reopened(open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC));
    if (reopened.get() < 0) return failure.Fail(errno, "open", path);
    if (flock(reopened.get(), LOCK_EX | LOCK_NB) != 0) return failure.Fail(errno, "flock", path);
    fd = reopened.release();
    return true;
  }
};

// memoryCopy -> fd: a sealed memfd (called `name`) holding a copy of the file behind
// `backingFd` (`path` names it in messages), or of `bytes` when given, to attach instead of it
// (systemd's --in-memory): the file can then be deleted or replaced, and writes through the
// device never reach it. Sealed against shrinking and growing, so that the device's size
// cannot change under it.
struct MemoryCopyOp : FdStep {
  using A = Arg::memoryCopy;
  std::string path;
  int backingFd;
  std::vector<char> bytes;
  bool fromBytes;
  std::string name;
  explicit MemoryCopyOp(const Args& args)
      : path(ArgString(args, A::path)),
        backingFd(ArgInt(args, A::backingFd, -1)),
        fromBytes(!args[A::bytes].IsUndefined()),
        name(ArgString(args, A::name, 249)) {
    if (fromBytes && !args[A::bytes].IsTypedArray()) InvalidArg(args, A::bytes, "undefined or a typed array of the bytes to copy");
    if (fromBytes) {
      Napi::TypedArray array = args[A::bytes].As<Napi::TypedArray>();
      const char* data = static_cast<const char*>(array.ArrayBuffer().Data()) + array.ByteOffset();
      bytes.assign(data, data + array.ByteLength());
    } else if (backingFd < 0) {
      InvalidArg(args, A::backingFd, "the backing fd when no bytes are given");
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
      struct stat st;
      if (!CheckBackingType(backingFd, path, &st, &failure)) return false;
      if (!S_ISREG(st.st_mode)) return failure.Refuse("ERR_LOOP_INVALID_BACKING", path + " is not a regular file (inMemory copies one)", path);
      off_t position = 0;
      while (position < st.st_size) {
        // copy_file_range between two files; sendfile where the kernel cannot (older kernels).
        ssize_t copied = copy_file_range(backingFd, &position, memory.get(), nullptr, static_cast<size_t>(st.st_size - position), 0);
        if (copied < 0 && (errno == EXDEV || errno == EINVAL || errno == ENOSYS || errno == EOPNOTSUPP)) {
          copied = sendfile(memory.get(), backingFd, &position, static_cast<size_t>(st.st_size - position));
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
  Export<OpenBackingOp>(env, exports, "openBacking");
  Export<LockOp>(env, exports, "lockFile");
  Export<MknodOp>(env, exports, "mknod");
  Export<CloseOp>(env, exports, "closeOwned");
  Export<CloseHeldOp>(env, exports, "closeHeld");
}

}  // namespace loopdev
