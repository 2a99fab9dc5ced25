// The device a step on an existing loop device works on (detach, and every change of a bound
// device): named by number or by the caller's own path, reached through a held fd or opened
// here, verified to be that loop device before any ioctl, and, for a handle, checked to be
// still the binding the handle made.
#pragma once

#include <fcntl.h>
#include <napi.h>

#include <cstdint>
#include <string>

#include "op.h"
#include "status.h"

namespace loopdev {

std::string DevicePath(int number);

// Opens `path`, which must be the whole disk of loop device `expected` (-1: any), checking
// before any ioctl is sent (ERR_LOOP_NOT_LOOP_DEVICE otherwise). -1 with *failure set.
int OpenLoop(const std::string& path, int flags, Status* status, Failure* failure, int expected);

// Another open file of the device `fd` (already verified) is, with `flags`: through
// /proc/self/fd, so that no path is resolved again (a container's /dev may change meanwhile),
// as systemd's fd_reopen() does; where /proc is not mounted, by path, verified again. -1 with
// errno set (ENOTBLK: the path is no longer that device).
int ReopenLoop(int fd, const Status& status, int flags);

// BLKPG_ADD_PARTITION or BLKPG_DEL_PARTITION; 0 or the errno.
int Blkpg(int fd, int op, const Partition& partition);

struct Target {
  // What the step does with the caller's held fd: use it for the step's length (a duplicate is
  // made on the main thread, so that a close() meanwhile cannot take it away), or take it over
  // to close it (see Take()).
  enum HeldFd { kBorrow, kTake };

  int number;
  std::string path;  // the caller's, or /dev/loopN
  bool checkIdentity;
  uint64_t diskseq, backingDevice, backingInode;
  Fd held;           // the step's own fd on the device (a duplicate, or the one taken), or -1
  int heldNumber;    // the caller's number for it (what was taken from the owned set), or -1

  enum Bound { kMayBeUnbound, kMustBeBound };

  // Reads layout.h's LOOPDEV_TARGET_ARGS (number, path?, heldFd, checkIdentity, diskseq,
  // backingDevice, backingInode) from `first`, a step's TargetAt<Arg::step>(). A held fd that this environment does not own is refused
  // (EBADF), never used: its number may belong to anyone's file by now.
  Target(const Args& args, size_t first, HeldFd use = kBorrow);

  // The fd to work on (opened into *opened with `flags` unless held), checked to be loop
  // device `number` and, for a handle, still its binding (ERR_LOOP_REUSED otherwise).
  // kMustBeBound refuses an unbound device (ERR_LOOP_NOT_ATTACHED). -1 with *failure set.
  int Open(Fd* opened, Status* status, Failure* failure, Bound bound, int flags = O_RDONLY) const;

  // kTake: the held fd leaves the owned set, on the main thread, and is the step's from now on.
  // Called last in the step's constructor, once no other argument can be refused.
  void Take(Napi::Env env);

  // kTake, after a failed Run(): the held fd goes back to the owned set if it is still open
  // and the environment lives on (the caller's handle keeps it), else it is closed.
  void GiveBack(Napi::Env env, bool alive);

 private:
  bool SameBinding(const Status& status) const;
};

}  // namespace loopdev
