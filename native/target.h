// The device a step on an existing loop device works on (detach, and every change of a bound
// device): named by number or by the caller's own path, reached through a held fd or opened
// here, and, for a handle, checked to be still the binding the handle made.
#pragma once

#include <fcntl.h>
#include <napi.h>

#include <cstdint>
#include <string>

#include "op.h"
#include "status.h"

namespace loopdev {

std::string DevicePath(int number);

// Opens a path that must be a loop block device, checking before any ioctl is sent.
int OpenLoop(const std::string& path, int flags, Status* status, Failure* failure);

// BLKPG_ADD_PARTITION or BLKPG_DEL_PARTITION; 0 or the errno.
int Blkpg(int fd, int op, const Partition& partition);

struct Target {
  int number;
  std::string path;  // the caller's, or /dev/loopN
  int heldFd;        // -1: open path
  bool checkIdentity;
  uint64_t diskseq, backingDevice, backingInode;

  enum Bound { kMayBeUnbound, kMustBeBound };

  // Reads seven arguments from `first`: number, path?, heldFd, checkIdentity, diskseq,
  // backingDevice, backingInode.
  Target(const Args& args, size_t first);

  // The fd to work on (opened into *opened with `flags` unless held), checked to be a loop
  // device and, for a handle, still its binding (ERR_LOOP_REUSED otherwise). kMustBeBound
  // refuses an unbound device (ERR_LOOP_NOT_ATTACHED). -1 with *failure set.
  int Open(Fd* opened, Status* status, Failure* failure, Bound bound, int flags = O_RDONLY) const;

 private:
  bool SameBinding(const Status& status) const;
};

}  // namespace loopdev
