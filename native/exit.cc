// detachOnExit (see exit.h): the registry of each environment, the unbind it makes at teardown,
// and the two steps lib/ calls: registerOnExit (detachOnExit() of a device already attached,
// and a handle that follows its device after a change) and detachRegistered (the main thread's
// process.exit() and SIGINT/SIGTERM, which end the process without the environment's teardown).
#include "exit.h"

#include <linux/blkpg.h>
#include <linux/loop.h>
#include <sys/file.h>
#include <sys/ioctl.h>

#include <utility>

#include "addon.h"
#include "status.h"
#include "target.h"

namespace loopdev {

bool UnbindIfSame(const Binding& binding) {
  Status now;
  Failure ignored;
  Fd device(OpenLoop(DevicePath(binding.number), O_RDONLY, &now, &ignored));
  const char* syscall = "";
  if (device.get() < 0 || ReadStatus(device.get(), &now, &syscall, Detail::kBinding) != 0 || !now.bound) return false;
  // Released and bound again since (by anyone, this process included): not ours to clear.
  const bool same = binding.diskseq != 0 && now.diskseq != 0
                        ? now.diskseq == binding.diskseq
                        : now.backingDevice == binding.backingDevice && now.backingInode == binding.backingInode;
  if (!same) return false;
  for (const Partition& partition : binding.partitions) Blkpg(device.get(), BLKPG_DEL_PARTITION, partition);
  // As in DetachOp: udev starts no probe of a locked device, and a probe under way at the
  // release would leave a PARTSCAN device's partitions behind on the unbound device.
  flock(device.get(), LOCK_EX | LOCK_NB);
  return ioctl(device.get(), LOOP_CLR_FD, 0) == 0;
}

size_t UnbindAll(ExitRegistry* registry) {
  size_t unbound = 0;
  for (const auto& entry : *registry) unbound += UnbindIfSame(entry.second) ? 1 : 0;
  registry->clear();
  return unbound;
}

void DetachAtExit(Napi::Env env, Binding binding) {
  const int number = binding.number;
  Data(env).exitRegistry[number] = std::move(binding);
}

void ForgetAtExit(Napi::Env env, int number) { Data(env).exitRegistry.erase(number); }

namespace {

// registerOnExit(target..., partitions?): the device, which must be bound (and, for a handle,
// still its binding), is detached at this environment's teardown, as the binding it has now.
struct RegisterOnExitOp : Step {
  Target target;
  Binding binding;

  explicit RegisterOnExitOp(const Args& args) : target(args, 0) { binding.partitions = ArgPartitions(args, 7); }

  bool Run() {
    Fd opened;
    Status status;
    if (target.Open(&opened, &status, &failure, Target::kMustBeBound) < 0) return false;
    binding.number = target.number;
    binding.diskseq = status.diskseq;
    binding.backingDevice = status.backingDevice;
    binding.backingInode = status.backingInode;
    return true;
  }

  Napi::Value Result(Napi::Env env) { return env.Undefined(); }

  void Settle(Napi::Env env, bool delivered) {
    if (delivered) DetachAtExit(env, std::move(binding));
    else Abandon();
  }

  // The caller's thread is gone before it heard back: what it asked for is due now.
  void Abandon() { UnbindIfSame(binding); }
};

// detachRegistered() -> how many devices it unbound. The registry is taken on the calling
// thread (the one that owns it) before anything is unbound.
struct DetachRegisteredOp : Step {
  ExitRegistry registry;
  size_t unbound = 0;

  explicit DetachRegisteredOp(const Args& args) { registry.swap(Data(args.Env()).exitRegistry); }

  bool Run() {
    unbound = UnbindAll(&registry);
    return true;
  }

  Napi::Value Result(Napi::Env env) { return Napi::Number::New(env, static_cast<double>(unbound)); }
};

}  // namespace

void InitExit(Napi::Env env, Napi::Object exports) {
  Export<RegisterOnExitOp>(env, exports, "registerOnExit");
  Export<DetachRegisteredOp>(env, exports, "detachRegistered");
}

}  // namespace loopdev
