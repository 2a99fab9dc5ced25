#include "addon.h"

#include <unistd.h>

namespace loopdev {

AddonData::~AddonData() {
  // Worker.terminate() runs no JavaScript of the thread's: detachOnExit is kept here. First,
  // while a held device's own fd still keeps its number from being bound by anyone else.
  std::vector<Deferred> deferred;
  DoExitWork(&exitWork, &deferred);
  // A worker thread that ends (or is terminated) must not keep devices bound through fds
  // it held: closing them lets AUTOCLEAR release the devices, as at process exit.
  for (int fd : ownedFds) close(fd);
  // Then, as detach() does, the releases someone else's close makes (udev probes a device
  // after every change) are waited for, bounded: when terminate() resolves, they are over.
  WaitForReleases(deferred, {});
}

AddonData& Data(Napi::Env env) { return *env.GetInstanceData<AddonData>(); }

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  env.SetInstanceData(new AddonData());
  InitErrors(env, exports);
  InitLayout(env, exports);
  InitControl(env, exports);
  InitDevice(env, exports);
  InitChange(env, exports);
  InitFs(env, exports);
  InitList(env, exports);
  InitMount(env, exports);
  InitExit(env, exports);
  InitReap(env, exports);
  return exports;
}

}  // namespace loopdev

static Napi::Object InitModule(Napi::Env env, Napi::Object exports) { return loopdev::Init(env, exports); }

NODE_API_MODULE(loopdev, InitModule)
