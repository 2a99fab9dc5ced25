#include "target.h"

#include <fcntl.h>
#include <linux/blkpg.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

namespace loopdev {

std::string DevicePath(int number) { return "/dev/loop" + std::to_string(number); }

int OpenLoop(const std::string& path, int flags, Status* status, Failure* failure, int expected) {
  Fd fd(open(path.c_str(), flags | O_CLOEXEC));
  if (fd.get() < 0) {
    failure->Fail(Stage::openDevice, errno, "open", path);
    return -1;
  }
  const int err = CheckLoopDevice(fd.get(), status, expected);
  if (err == 0) return fd.release();
  if (err != ENOTBLK) {
    failure->Fail(Stage::openDevice, err, "fstat", path);
  } else {
    failure->Refuse("ERR_LOOP_NOT_LOOP_DEVICE",
                    path + (expected >= 0 ? " is not loop device " + std::to_string(expected) : std::string(" is not a loop device")) +
                        " (a whole-disk block device of major 7)",
                    path);
  }
  return -1;
}

int ReopenLoop(int fd, const Status& status, int flags) {
  char path[32];
  snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
  Fd reopened(open(path, flags | O_CLOEXEC));
  if (reopened.get() < 0 && errno == ENOENT) reopened.reset(open(DevicePath(static_cast<int>(status.number)).c_str(), flags | O_CLOEXEC));
  if (reopened.get() < 0) return -1;
  Status check;
  if (const int err = CheckLoopDevice(reopened.get(), &check, static_cast<int>(status.number)); err != 0) {
    errno = err;
    return -1;
  }
  return reopened.release();
}

int Blkpg(int fd, int op, const Partition& partition) {
  struct blkpg_partition part;
  memset(&part, 0, sizeof part);
  part.pno = partition.number;
  part.start = static_cast<long long>(partition.start);
  part.length = static_cast<long long>(partition.length);
  struct blkpg_ioctl_arg arg;
  memset(&arg, 0, sizeof arg);
  arg.op = op;
  arg.datalen = sizeof part;
  arg.data = &part;
  return ioctl(fd, BLKPG, &arg) == 0 ? 0 : errno;
}

Target::Target(const Args& args, size_t first, HeldFd use)
    : number(ArgInt(args, first + Arg::target::number, 0, 0xfffff)),
      path(args[first + Arg::target::path].IsUndefined() ? DevicePath(number) : ArgPath(args, first + Arg::target::path)),
      checkIdentity(ArgBool(args, first + Arg::target::checkIdentity)),
      diskseq(ArgU64(args, first + Arg::target::diskseq)),
      backingDevice(ArgU64(args, first + Arg::target::backingDevice)),
      backingInode(ArgU64(args, first + Arg::target::backingInode)),
      heldNumber(ArgInt(args, first + Arg::target::heldFd, -1)) {
  if (heldNumber < 0) return;
  const Napi::Env env = args.Env();
  if (!OwnsFd(env, heldNumber)) {
    Failure failure;
    failure.Fail(EBADF, "ioctl", path);
    throw Napi::Error(env, MakeError(env, failure));
  }
  if (use == kTake) return;
  held.reset(fcntl(heldNumber, F_DUPFD_CLOEXEC, 0));
  if (held.get() < 0) {
    Failure failure;
    failure.Fail(errno, "fcntl(F_DUPFD_CLOEXEC)", path);
    throw Napi::Error(env, MakeError(env, failure));
  }
}

void Target::Take(Napi::Env env) {
  if (heldNumber >= 0 && ReleaseFd(env, heldNumber)) held.reset(heldNumber);
}

void Target::GiveBack(Napi::Env env, bool alive) {
  if (held.get() < 0) return;
  if (alive) AdoptFd(env, held.release());
  else held.reset();
}

bool Target::SameBinding(const Status& status) const {
  if (diskseq != 0 && status.diskseq != 0) return diskseq == status.diskseq;
  return status.backingDevice == backingDevice && status.backingInode == backingInode;
}

int Target::Open(Fd* opened, Status* status, Failure* failure, Bound bound, int flags) const {
  int fd = held.get();
  if (fd < 0) {
    opened->reset(OpenLoop(path, flags, status, failure, number));
    fd = opened->get();
    // ENXIO: the kernel is releasing the device (Lo_rundown refuses new openers), so for a step
    // that needs it bound it is not attached any more.
    if (fd < 0 && bound == kMustBeBound && failure->code == nullptr && failure->err == ENXIO) {
      failure->Refuse("ERR_LOOP_NOT_ATTACHED", path + " is not attached to a file (it is being released)", path);
    }
    if (fd < 0) return -1;
  } else if (int err = CheckLoopDevice(fd, status, number); err != 0) {
    failure->Fail(Stage::openDevice, err, "fstat", path);
    return -1;
  }
  if (ioctl(fd, BLKGETDISKSEQ, &status->diskseq) != 0) status->diskseq = 0;
  // Every bind gives the device a new diskseq (5.15+): the one the handle remembers means the
  // binding is still ours, or gone. Any other answer, or none, and the binding itself is asked.
  const bool knownOurs = checkIdentity && status->diskseq != 0 && status->diskseq == diskseq;
  if (bound == kMustBeBound || (checkIdentity && !knownOurs)) {
    const char* syscall = "";
    if (int err = ReadStatus(fd, status, &syscall, Detail::kBinding); err != 0) {
      failure->Fail(Stage::readBack, err, syscall, path);
      return -1;
    }
    if (bound == kMustBeBound && !status->bound) {
      failure->Refuse("ERR_LOOP_NOT_ATTACHED", path + " is not attached to a file", path);
      return -1;
    }
    if (checkIdentity && status->bound && !SameBinding(*status)) {
      failure->Refuse("ERR_LOOP_REUSED", path + " was released and is now bound to something else; not touching it", path);
      return -1;
    }
  }
  failure->device = number;
  return fd;
}

}  // namespace loopdev
