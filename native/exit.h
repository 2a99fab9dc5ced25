// detachOnExit, kept by the addon: each Node environment (the main thread, each worker) has a
// registry of the devices it promised to detach, filled when an attach is delivered (so no
// moment exists when the caller has a device the registry does not know) and emptied at the
// environment's teardown, where no JavaScript runs any more (Worker.terminate()).
#pragma once

#include <napi.h>

#include <cstdint>
#include <map>
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

// Unbinds the device through a fresh fd checked to be a loop device, if it is still `binding`
// (LOOP_CLR_FD; deferred by the kernel to the last close while someone has it open). Answers
// whether it sent LOOP_CLR_FD. Touches no N-API: callable from any thread and at exit().
bool UnbindIfSame(const Binding& binding);

// Unbinds every device of the registry (see UnbindIfSame) and empties it; answers how many.
size_t UnbindAll(ExitRegistry* registry);

// The calling environment's registry: add a binding, or forget a device that was detached.
void DetachAtExit(Napi::Env env, Binding binding);
void ForgetAtExit(Napi::Env env, int number);

}  // namespace loopdev
