// mount(2) and umount2(2), so that mounting an image spawns no `mount` binary.
#include <sys/mount.h>

#include <cerrno>

#include "op.h"

namespace loopdev {

struct MountOp : Step {
  std::string source, target, fstype, data;
  unsigned long flags;
  explicit MountOp(const Args& args)
      : source(ArgPath(args, 0)),
        target(ArgPath(args, 1)),
        fstype(ArgString(args, 2)),
        data(ArgString(args, 4)),
        flags(static_cast<unsigned long>(ArgU64(args, 3))) {}
  bool Run() {
    if (mount(source.c_str(), target.c_str(), fstype.c_str(), flags, data.empty() ? nullptr : data.c_str()) == 0)
      return true;
    return failure.Fail(errno, "mount", target);
  }
  Napi::Value Result(Napi::Env env) { return env.Undefined(); }
};

struct UnmountOp : Step {
  std::string target;
  int flags;
  explicit UnmountOp(const Args& args) : target(ArgPath(args, 0)), flags(ArgInt(args, 1, 0)) {}
  bool Run() { return umount2(target.c_str(), flags) == 0 || failure.Fail(errno, "umount2", target); }
  Napi::Value Result(Napi::Env env) { return env.Undefined(); }
};

void InitMount(Napi::Env env, Napi::Object exports) {
  Export<MountOp>(env, exports, "mount");
  Export<UnmountOp>(env, exports, "unmount");
}

}  // namespace loopdev
