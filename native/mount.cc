// mount(2) and umount2(2), so that mounting an image spawns no `mount` binary.
#include <sys/mount.h>
#include <sys/stat.h>

#include <cerrno>

#include "exit.h"
#include "op.h"
#include "sys.h"

namespace loopdev {

// mount: mount(2); with unmountAtExit, the mount is
// undone (lazily) at this environment's teardown unless an unmount of the target came first,
// registered in the step that delivers it.
struct MountOp : Step {
  using A = Arg::mount;
  std::string source, target, fstype, data;
  unsigned long flags;
  bool unmountAtExit;
  Mounted mounted;
  explicit MountOp(const Args& args)
      : source(ArgPath(args, A::source)),
        target(ArgPath(args, A::target)),
        fstype(ArgString(args, A::fstype)),
        data(ArgString(args, A::data)),
        flags(static_cast<unsigned long>(ArgU64(args, A::flags))),
        unmountAtExit(ArgBool(args, A::unmountAtExit)) {}
  bool Run() {
    if (mount(source.c_str(), target.c_str(), fstype.c_str(), flags, data.empty() ? nullptr : data.c_str()) != 0)
      return failure.Fail(errno, "mount", target);
    struct stat st;
    if (unmountAtExit && Lstat(target.c_str(), &st) == 0) mounted = {target, static_cast<uint64_t>(st.st_dev)};
    return true;
  }
  Napi::Value Result(Napi::Env env) { return env.Undefined(); }
  void Settle(Napi::Env env, bool delivered) {
    if (mounted.target.empty()) return;
    if (delivered) UnmountAtExit(env, mounted);
    else Abandon();
  }
  void Abandon() {
    if (!mounted.target.empty()) UnmountIfSame(mounted);
  }
};

struct UnmountOp : Step {
  std::string target;
  int flags;
  explicit UnmountOp(const Args& args) : target(ArgPath(args, Arg::unmount::target)), flags(ArgInt(args, Arg::unmount::flags, 0)) {}
  bool Run() { return umount2(target.c_str(), flags) == 0 || failure.Fail(errno, "umount2", target); }
  Napi::Value Result(Napi::Env env) { return env.Undefined(); }
  void Settle(Napi::Env env, bool) { ForgetMountAtExit(env, target); }
};

void InitMount(Napi::Env env, Napi::Object exports) {
  Export<MountOp>(env, exports, "mount");
  Export<UnmountOp>(env, exports, "unmount");
}

}  // namespace loopdev
