#include "target.h"

#include <fcntl.h>
#include <linux/blkpg.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#ifndef BLKGETDISKSEQ
#define BLKGETDISKSEQ _IOR(0x12, 128, __u64)
#endif

namespace loopdev {

std::string DevicePath(int number) { return "/dev/loop" + std::to_string(number); }

int OpenLoop(const std::string& path, int flags, Status* status, Failure* failure) {
  int fd = open(path.c_str(), flags | O_CLOEXEC);
  if (fd < 0) {
    failure->Fail(errno, "open", path);
    return -1;
  }
  int err = CheckLoopDevice(fd, status);
  if (err == 0) return fd;
  close(fd);
  if (err == ENOTBLK)
    failure->Refuse("ERR_LOOP_NOT_LOOP_DEVICE", path + " is not a loop block device (major 7)", path);
  else
    failure->Fail(err, "fstat", path);
  return -1;
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

Target::Target(const Args& args, size_t first)
    : number(ArgInt(args, first)),
      path(args[first + 1].IsUndefined() ? DevicePath(number) : ArgString(args, first + 1)),
      heldFd(ArgInt(args, first + 2)),
      checkIdentity(ArgBool(args, first + 3)),
      diskseq(ArgU64(args, first + 4)),
      backingDevice(ArgU64(args, first + 5)),
      backingInode(ArgU64(args, first + 6)) {}

bool Target::SameBinding(const Status& status) const {
  if (diskseq != 0 && status.diskseq != 0) return diskseq == status.diskseq;
  return status.backingDevice == backingDevice && status.backingInode == backingInode;
}

int Target::Open(Fd* opened, Status* status, Failure* failure, Bound bound, int flags) const {
  int fd = heldFd;
  if (fd < 0) {
    opened->reset(OpenLoop(path, flags, status, failure));
    fd = opened->get();
    if (fd < 0) return -1;
  } else if (int err = CheckLoopDevice(fd, status); err != 0) {
    failure->Fail(err, "fstat", path);
    return -1;
  }
  if (ioctl(fd, BLKGETDISKSEQ, &status->diskseq) != 0) status->diskseq = 0;
  // Every bind gives the device a new diskseq (5.15+): the one the handle remembers means the
  // binding is still ours, or gone. Any other answer, or none, and the binding itself is asked.
  const bool knownOurs = checkIdentity && status->diskseq != 0 && status->diskseq == diskseq;
  if (bound == kMustBeBound || (checkIdentity && !knownOurs)) {
    const char* syscall = "";
    if (int err = ReadStatus(fd, status, &syscall, Detail::kBinding); err != 0) {
      failure->Fail(err, syscall, path);
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
  if (failure != nullptr) failure->device = number;
  return fd;
}

}  // namespace loopdev
