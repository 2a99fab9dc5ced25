// detachOnExit (see exit.h): the registry of each environment, what it undoes at teardown,
// and the steps lib/ calls: registerOnExit (detachOnExit() of a device already attached, and a
// handle that follows its device after a change), exitCleanup (the main thread's process.exit()
// and SIGINT/SIGTERM, which end the process without the environment's teardown), and the
// fixture's makeTempDir and removeTempDir.
#include "exit.h"

#include <dirent.h>
#include <fcntl.h>
#include <linux/blkpg.h>
#include <linux/loop.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <time.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <utility>

#include "addon.h"
#include "status.h"
#include "target.h"
#include "sys.h"

namespace loopdev {

bool UnbindIfSame(const Binding& binding, std::vector<Deferred>* deferred) {
  Status now;
  Failure ignored;
  const std::string path = DevicePath(binding.number);
  // Opened exclusively where it can be: EBUSY says a filesystem (or anyone else) has claimed
  // the device or one of its partitions, and then its release waits for the unmount.
  Fd device(OpenLoop(path, O_RDONLY | O_EXCL, &now, &ignored, binding.number));
  const bool claimed = device.get() < 0 && ignored.code == nullptr && ignored.err == EBUSY;
  if (claimed) device.reset(OpenLoop(path, O_RDONLY, &now, &ignored, binding.number));
  const char* syscall = "";
  if (device.get() < 0 || ReadStatus(device.get(), &now, &syscall, Detail::kBinding) != 0 || !now.bound) return false;
  // Released and bound again since (by anyone, this process included): not ours to clear.
  const bool same = binding.diskseq != 0 && now.diskseq != 0
                        ? now.diskseq == binding.diskseq
                        : now.backingDevice == binding.backingDevice && now.backingInode == binding.backingInode;
  if (!same) return false;
  for (const Partition& partition : binding.partitions) Blkpg(device.get(), BLKPG_DEL_PARTITION, partition);
  // As in DetachOp: udev starts no probe of a locked device, and a probe under way at the
  // release would leave a PARTSCAN device's partitions behind on the unbound device.
  flock(device.get(), LOCK_EX | LOCK_NB);
  if (ioctl(device.get(), LOOP_CLR_FD, 0) != 0) return false;
  // Waited for unless it is claimed (its release waits for the unmount): usually the close
  // below is the last and the release is over when it returns, but another opener's close, or
  // one whose open was under way at LOOP_CLR_FD, makes it later.
  Deferred left{binding.number, now.diskseq, 0, (now.flags & LO_FLAGS_PARTSCAN) != 0};
  struct stat st;
  if (deferred != nullptr && !claimed && Fstat(device.get(), &st) == 0) {
    left.rdev = st.st_rdev;
    deferred->push_back(left);
  }
  return true;
}

// Whether a deferred release is over: sysfs shows the device unbound (partitions gone too,
// for PARTSCAN), or bound again by someone else (another diskseq).
static bool ReleaseOver(const Deferred& left) {
  const uint32_t number = static_cast<uint32_t>(left.number);
  if (SysfsReleased(number, left.partscan)) return true;
  if (left.diskseq == 0) return false;
  char path[80], text[32] = {0};
  snprintf(path, sizeof path, "/sys/devices/virtual/block/loop%u/diskseq", number);
  Fd file(open(path, O_RDONLY | O_CLOEXEC));
  const ssize_t length = file.get() < 0 ? -1 : read(file.get(), text, sizeof text - 1);
  return length > 0 && strtoull(text, nullptr, 10) != left.diskseq;
}

size_t WaitForReleases(const std::vector<Deferred>& deferred, const std::set<int>& ownFds) {
  std::set<uint64_t> ours;
  for (int fd : ownFds) {
    struct stat st;
    if (Fstat(fd, &st) == 0 && S_ISBLK(st.st_mode)) ours.insert(st.st_rdev);
  }
  std::vector<Deferred> waiting;
  for (const Deferred& left : deferred) {
    if (ours.count(left.rdev) == 0) waiting.push_back(left);
  }
  struct timespec start, now;
  clock_gettime(CLOCK_MONOTONIC, &start);
  long pauseMs = 1;
  for (;;) {
    waiting.erase(std::remove_if(waiting.begin(), waiting.end(), ReleaseOver), waiting.end());
    clock_gettime(CLOCK_MONOTONIC, &now);
    const long elapsedMs = (now.tv_sec - start.tv_sec) * 1000 + (now.tv_nsec - start.tv_nsec) / 1000000;
    if (waiting.empty() || elapsedMs >= kExitWaitMs) return waiting.size();
    const long pause = std::min(pauseMs, kExitWaitMs - elapsedMs);
    struct timespec sleep = {pause / 1000, (pause % 1000) * 1000000};
    nanosleep(&sleep, nullptr);
    pauseMs = std::min(pauseMs * 2, 25L);
  }
}

bool UnmountIfSame(const Mounted& mounted) {
  struct stat st;
  // Unmounted since (then the path shows the filesystem below), or another one mounted there.
  if (Lstat(mounted.target.c_str(), &st) != 0 || static_cast<uint64_t>(st.st_dev) != mounted.filesystem) return false;
  return umount2(mounted.target.c_str(), MNT_DETACH | UMOUNT_NOFOLLOW) == 0;
}

// Empties the directory open as `fd` (on filesystem `device`), then removes `name` from `parent`.
static int RemoveTree(int parent, const std::string& name, int fd, dev_t device) {
  DIR* dir = fdopendir(fd);
  if (dir == nullptr) {
    close(fd);
    return errno;
  }
  while (struct dirent* entry = readdir(dir)) {
    const std::string child = entry->d_name;
    if (child == "." || child == "..") continue;
    // A symbolic link is removed, never followed; a directory answers EISDIR.
    if (unlinkat(dirfd(dir), child.c_str(), 0) == 0 || errno != EISDIR) continue;
    int sub = openat(dirfd(dir), child.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    struct stat st;
    if (sub < 0) continue;
    if (Fstat(sub, &st) != 0 || st.st_dev != device) {
      close(sub);  // a mount still there: its directory stays, and so does ours
      continue;
    }
    RemoveTree(dirfd(dir), child, sub, device);
  }
  closedir(dir);
  return unlinkat(parent, name.c_str(), AT_REMOVEDIR) == 0 ? 0 : errno;
}

int RemoveDirIfSame(const MadeDir& made) {
  const size_t slash = made.path.rfind('/');
  if (slash == std::string::npos) return EINVAL;
  Fd parent(open(slash == 0 ? "/" : made.path.substr(0, slash).c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (parent.get() < 0) return errno;
  const std::string name = made.path.substr(slash + 1);
  int fd = openat(parent.get(), name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) return errno;
  struct stat st;
  if (Fstat(fd, &st) != 0 || static_cast<uint64_t>(st.st_dev) != made.device || static_cast<uint64_t>(st.st_ino) != made.inode) {
    close(fd);
    return ESTALE;  // not the directory that was made: someone else's now
  }
  return RemoveTree(parent.get(), name, fd, st.st_dev);
}

size_t DoExitWork(ExitWork* work, std::vector<Deferred>* deferred) {
  for (const auto& entry : work->mounts) UnmountIfSame(entry.second);
  size_t unbound = 0;
  for (const auto& entry : work->devices) unbound += UnbindIfSame(entry.second, deferred) ? 1 : 0;
  for (const auto& entry : work->dirs) RemoveDirIfSame(entry.second);
  work->mounts.clear();
  work->devices.clear();
  work->dirs.clear();
  return unbound;
}

void DetachAtExit(Napi::Env env, Binding binding) {
  const int number = binding.number;
  Data(env).exitWork.devices[number] = std::move(binding);
}

void ForgetAtExit(Napi::Env env, int number) { Data(env).exitWork.devices.erase(number); }

void UnmountAtExit(Napi::Env env, Mounted mounted) {
  const std::string target = mounted.target;
  Data(env).exitWork.mounts[target] = std::move(mounted);
}

void ForgetMountAtExit(Napi::Env env, const std::string& target) { Data(env).exitWork.mounts.erase(target); }

namespace {

// registerOnExit: the device, which must be bound (and, for a handle,
// still its binding), is detached at this environment's teardown, as the binding it has now.
struct RegisterOnExitOp : Step {
  Target target;
  Binding binding;

  explicit RegisterOnExitOp(const Args& args) : target(args, TargetAt<Arg::registerOnExit>()) {
    binding.partitions = ArgPartitions(args, Arg::registerOnExit::partitions);
  }

  bool Run() {
    Fd opened;
    Status status;
    if (target.Open(&opened, &status, &failure, Target::kMustBeBound) < 0) return false;
    binding.number = target.number;
    binding.diskseq = status.diskseq;
    binding.backingDevice = status.backingDevice;
    binding.backingInode = status.backingInode;
    return true;
  }

  Napi::Value Result(Napi::Env env) { return env.Undefined(); }

  void Settle(Napi::Env env, bool delivered) {
    if (delivered) DetachAtExit(env, std::move(binding));
    else Abandon();
  }

  // The caller's thread is gone before it heard back: what it asked for is due now.
  void Abandon() { UnbindIfSame(binding); }
};

// exitCleanup() -> how many devices it unbound: the teardown's work, now, and the wait for
// releases left to someone else's close. The registry is taken on the calling thread (the one
// that owns it) before anything is undone. The process goes on after a signal the application
// handles, so held fds stay open: their devices are not waited for.
struct ExitCleanupOp : Step {
  ExitWork work;
  std::set<int> ownFds;
  size_t unbound = 0;

  explicit ExitCleanupOp(const Args& args) : ownFds(Data(args.Env()).ownedFds) { std::swap(work, Data(args.Env()).exitWork); }

  bool Run() {
    std::vector<Deferred> deferred;
    unbound = DoExitWork(&work, &deferred);
    WaitForReleases(deferred, ownFds);
    return true;
  }

  Napi::Value Result(Napi::Env env) { return Napi::Number::New(env, static_cast<double>(unbound)); }
};

// makeTempDir(prefix) -> path: mkdtemp(prefix + "XXXXXX") (mode 0700), deleted with everything
// in it at this environment's teardown unless removeTempDir() deleted it first. Registered in
// the step that delivers it, as an attach with detachOnExit is.
struct MakeTempDirOp : Step {
  MadeDir made;

  explicit MakeTempDirOp(const Args& args) : made{ArgPath(args, Arg::makeTempDir::prefix) + "XXXXXX", 0, 0} {}

  bool Run() {
    if (mkdtemp(&made.path[0]) == nullptr) return failure.Fail(errno, "mkdtemp", made.path);
    struct stat st;
    if (Lstat(made.path.c_str(), &st) != 0) {
      const int err = errno;
      rmdir(made.path.c_str());
      return failure.Fail(err, "lstat", made.path);
    }
    made.device = st.st_dev;
    made.inode = st.st_ino;
    return true;
  }

  Napi::Value Result(Napi::Env env) { return Napi::String::New(env, made.path); }

  void Settle(Napi::Env env, bool delivered) {
    if (!delivered) return Abandon();
    const std::string path = made.path;
    Data(env).exitWork.dirs[path] = std::move(made);
  }

  void Abandon() { RemoveDirIfSame(made); }
};

// removeTempDir(path): deletes a directory makeTempDir() made, with everything in it (no
// symbolic link followed, no mount entered: ENOTEMPTY then), and forgets it.
struct RemoveTempDirOp : Step {
  MadeDir made;
  bool known = false;

  explicit RemoveTempDirOp(const Args& args) {
    ExitWork& work = Data(args.Env()).exitWork;
    const std::string path = ArgString(args, Arg::removeTempDir::path);
    auto found = work.dirs.find(path);
    if (found == work.dirs.end()) return;
    made = found->second;
    known = true;
  }

  bool Run() {
    if (!known) return failure.Refuse("ERR_LOOP_INVALID_ARGUMENT", made.path + " is not a directory makeTempDir() made", made.path);
    const int err = RemoveDirIfSame(made);
    return err == 0 || err == ENOENT || failure.Fail(err, "rmdir", made.path);
  }

  Napi::Value Result(Napi::Env env) { return env.Undefined(); }

  // Forgotten once deleted, on the thread that owns the registry.
  void Settle(Napi::Env env, bool) { Data(env).exitWork.dirs.erase(made.path); }
};

}  // namespace

void InitExit(Napi::Env env, Napi::Object exports) {
  Export<RegisterOnExitOp>(env, exports, "registerOnExit");
  Export<ExitCleanupOp>(env, exports, "exitCleanup");
  Export<MakeTempDirOp>(env, exports, "makeTempDir");
  Export<RemoveTempDirOp>(env, exports, "removeTempDir");
}

}  // namespace loopdev
