// mount(2) and umount2(2), so that mounting an image spawns no `mount` binary.
#include <sys/mount.h>

#include <cerrno>

#include "op.h"

namespace loopdev {

struct MountOp : Step {
  std::string source, target, fstype, data;
  unsigned long flags;
  explicit MountOp(const Args& info)
      : source(ArgString(info, 0)),
        target(ArgString(info, 1)),
        fstype(ArgString(info, 2)),
        data(ArgString(info, 4)),
        flags(static_cast<unsigned long>(ArgU64(info, 3))) {}
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
  explicit UnmountOp(const Args& info) : target(ArgString(info, 0)), flags(ArgInt(info, 1)) {}
  bool Run() { return umount2(target.c_str(), flags) == 0 || failure.Fail(errno, "umount2", target); }
  Napi::Value Result(Napi::Env env) { return env.Undefined(); }
};

void InitMount(Napi::Env env, Napi::Object exports) {
  Export<MountOp>(env, exports, "mount");
  Export<UnmountOp>(env, exports, "unmount");
}

}  // namespace loopdev
