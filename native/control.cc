// /dev/loop-control: find, add and remove loop devices.
#include <fcntl.h>
#include <linux/loop.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <cerrno>

#include "addon.h"
#include "op.h"

namespace loopdev {

static const char kControlPath[] = "/dev/loop-control";

// Opens /dev/loop-control; the fd is owned by the addon (closed at environment teardown).
struct OpenControlOp : FdStep {
  explicit OpenControlOp(const Args&) {}
  bool Run() {
    fd = open(kControlPath, O_RDWR | O_CLOEXEC);
    return fd >= 0 || failure.Fail(errno, "open", kControlPath);
  }
};

// LOOP_CTL_ADD and LOOP_CTL_REMOVE differ only in the request (and in the step whose argument
// names they read). (LOOP_CTL_GET_FREE is issued inside AttachOp, under the control lock.)
template <unsigned long Request, class A>
struct ControlOp : Step {
  int controlFd;
  int number;
  int result = -1;
  explicit ControlOp(const Args& args) : controlFd(ArgInt(args, A::controlFd, 0)), number(ArgInt(args, A::number, 0, 0xfffff)) {}
  bool Run() {
    result = ioctl(controlFd, Request, number);
    if (result >= 0) return true;
    failure.device = number;
    return failure.Fail(errno, Request == LOOP_CTL_ADD ? "ioctl(LOOP_CTL_ADD)" : "ioctl(LOOP_CTL_REMOVE)", kControlPath);
  }
  Napi::Value Result(Napi::Env env) { return Napi::Number::New(env, result); }
};

void InitControl(Napi::Env env, Napi::Object exports) {
  Export<OpenControlOp>(env, exports, "openControl");
  Export<ControlOp<LOOP_CTL_ADD, Arg::addDevice>>(env, exports, "addDevice");
  Export<ControlOp<LOOP_CTL_REMOVE, Arg::removeDevice>>(env, exports, "removeDevice");
}

}  // namespace loopdev
