// detachOnExit, kept by the addon: each Node environment (the main thread, each worker) has a
// registry of the devices it promised to detach, filled when an attach is delivered (so no
// moment exists when the caller has a device the registry does not know) and emptied at the
// environment's teardown, where no JavaScript runs any more (Worker.terminate()). The
// loopdev/testing fixture registers its mounts and temp directories the same way.
#pragma once

#include <napi.h>

#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "op.h"

namespace loopdev {

// One binding as the kernel tells it from the next one of the same device: enough to unbind
// it later without ever clearing a device someone else has bound since.
struct Binding {
  int number = -1;
  uint64_t diskseq = 0;  // 0: the kernel has none (before 5.15); backing device and inode decide
  uint64_t backingDevice = 0;
  uint64_t backingInode = 0;
  std::vector<Partition> partitions;  // added with BLKPG: deleted before LOOP_CLR_FD
};

// Devices to detach at teardown, by number (a newer binding of a number replaces the older).
using ExitRegistry = std::map<int, Binding>;

// A mount to undo: its target, and the st_dev the mounted filesystem shows there (what tells
// it from whatever is, or is mounted, at that path later).
struct Mounted {
  std::string target;
  uint64_t filesystem = 0;
};

// A directory the addon made (makeTempDir) and deletes, known by its device and inode.
struct MadeDir {
  std::string path;
  uint64_t device = 0;
  uint64_t inode = 0;
};

// Everything one environment undoes at its teardown, in this order: mounts (lazily: MNT_DETACH,
// so that a busy one goes as soon as it is not), devices, then directories.
struct ExitWork {
  std::map<std::string, Mounted> mounts;
  ExitRegistry devices;
  std::map<std::string, MadeDir> dirs;
};

// A release after LOOP_CLR_FD, waited for until sysfs shows it over: at once when ours was the
// last close; later when someone else's close makes it: udev's probe, most often, which takes
// milliseconds. Not one of a mounted device (the mount holds it until the unmount).
struct Deferred {
  int number = -1;
  uint64_t diskseq = 0;
  uint64_t rdev = 0;  // the device's st_rdev: an fd of this process's on it is not waited for
  bool partscan = false;
};

// Unbinds the device through a fresh fd checked to be a loop device, if it is still `binding`
// (LOOP_CLR_FD; deferred by the kernel to the last close while someone has it open). Answers
// whether it sent LOOP_CLR_FD; with `deferred`, a release left to another opener that is not a
// mount is added to it. Touches no N-API: callable from any thread and at exit().
bool UnbindIfSame(const Binding& binding, std::vector<Deferred>* deferred = nullptr);

// Waits, at most kExitWaitMs in all, until every deferred release is over, as detach() waits
// by default, except for devices open in `ownFds` (this process's own fds would keep them
// until after the wait). Answers how many are still bound.
constexpr int kExitWaitMs = 1000;
size_t WaitForReleases(const std::vector<Deferred>& deferred, const std::set<int>& ownFds);

// umount2(MNT_DETACH), if the filesystem mounted is still there; answers whether it unmounted.
bool UnmountIfSame(const Mounted& mounted);

// Deletes the directory and everything in it, if it is still the one made; never follows a
// symbolic link and never enters another filesystem (a mount still inside it). 0 or the errno.
int RemoveDirIfSame(const MadeDir& dir);

// Does all the work (see ExitWork) and empties it; answers how many devices it unbound, and
// adds to `deferred` the releases left to someone else's close (see WaitForReleases).
size_t DoExitWork(ExitWork* work, std::vector<Deferred>* deferred);

// The calling environment's registry: add a binding, or forget a device that was detached.
void DetachAtExit(Napi::Env env, Binding binding);
void ForgetAtExit(Napi::Env env, int number);
// The same for a mount (forgotten by any unmount of its target).
void UnmountAtExit(Napi::Env env, Mounted mounted);
void ForgetMountAtExit(Napi::Env env, const std::string& target);

}  // namespace loopdev
