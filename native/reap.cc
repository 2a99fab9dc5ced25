// Releasing a leaked device, and nothing in use. lib/loop/reap.ts has already found no mount,
// holder or open fd it can see; this step asks the kernel, which sees every opener, and undoes
// what LOOP_CLR_FD did when it finds one.
#include <fcntl.h>
#include <linux/loop.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "addon.h"
#include "op.h"
#include "status.h"
#include "target.h"

namespace loopdev {

// reap (a target) -> outcome:
//   "released"  unbound by this call
//   "pending"   cleared with no other opener counted, but still bound: an open under way then
//               (udev's) makes that opener's close the release
//   "locked"    someone holds a BSD lock on the device (udev probing it, systemd, a tool
//               configuring it): in use, nothing done
//   "opened"    LOOP_CLR_FD found another opener, so the kernel only set AUTOCLEAR; it was
//               cleared again (or was set before): the device is as it was
//   "autoclear" as "opened", but clearing AUTOCLEAR again failed: the device will be
//               released at its last close
// A device that is no longer the binding looked at (diskseq, or backing device and inode)
// fails with ERR_LOOP_REUSED, one no longer bound with ERR_LOOP_NOT_ATTACHED: left alone.
struct ReapOp : Step {
  Target target;
  Status status;
  const char* outcome = "";

  explicit ReapOp(const Args& args) : target(args, TargetAt<Arg::reap>()) {}

  bool Run() {
    Fd opened;
    // Read-only: its close gives udev no IN_CLOSE_WRITE, so no probe follows the look.
    const int fd = target.Open(&opened, &status, &failure, Target::kMustBeBound, O_RDONLY);
    if (fd < 0) return false;
    // udev and systemd lock a device while they probe or configure it, and udev starts no
    // probe of a device someone holds LOCK_EX on (systemd.io/BLOCK_DEVICE_LOCKING).
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
      if (errno != EWOULDBLOCK) return failure.Fail(errno, "flock", target.path);
      outcome = "locked";
      return true;
    }
    const bool hadAutoclear = (status.flags & LO_FLAGS_AUTOCLEAR) != 0;
    if (ioctl(fd, LOOP_CLR_FD, 0) != 0) {
      if (errno != ENXIO) return failure.Fail(errno, "ioctl(LOOP_CLR_FD)", target.path);
      return failure.Refuse("ERR_LOOP_NOT_ATTACHED", target.path + " was released by someone else meanwhile", target.path);
    }
    // With another opener the kernel only sets AUTOCLEAR and the device stays bound, so
    // LOOP_GET_STATUS64 still answers; with none it answers ENXIO (Lo_rundown since 5.18,
    // unbound at once before that).
    struct loop_info64 info;
    memset(&info, 0, sizeof info);
    if (ioctl(fd, LOOP_GET_STATUS64, &info) == 0) {
      outcome = "opened";
      if (hadAutoclear) return true;
      info.lo_flags &= ~static_cast<__u32>(LO_FLAGS_AUTOCLEAR);
      // The kernel keeps READ_ONLY and DIRECT_IO as they are and cannot clear PARTSCAN.
      info.lo_flags &= LOOP_SET_STATUS_SETTABLE_FLAGS | LO_FLAGS_READ_ONLY | LO_FLAGS_DIRECT_IO;
      if (ioctl(fd, LOOP_SET_STATUS64, &info) != 0) outcome = "autoclear";
      return true;
    }
    const bool lastOpener = errno == ENXIO;
    opened.reset();  // ours was the last open: this close unbinds it
    // As in DetachOp: an open under way at LOOP_CLR_FD makes its close the release, which may
    // be half done as we look (loop/ gone, a PARTSCAN device's partitions not yet).
    const bool partscan = (status.flags & LO_FLAGS_PARTSCAN) != 0;
    outcome = lastOpener && SysfsReleased(static_cast<uint32_t>(target.number), partscan) ? "released" : "pending";
    return true;
  }

  Napi::Value Result(Napi::Env env) { return Napi::String::New(env, outcome); }
};

void InitReap(Napi::Env env, Napi::Object exports) { Export<ReapOp>(env, exports, "reap"); }

}  // namespace loopdev
