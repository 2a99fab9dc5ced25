// Per-environment state: one copy for the main thread and one for each worker thread.
#pragma once

#include <napi.h>

#include <set>

#include "exit.h"


namespace loopdev {

struct AddonData {
  Napi::FunctionReference errorFactory;  // lib/core/errors.ts fromNative()
  std::set<int> ownedFds;                 // closed at environment teardown
  ExitWork exitWork;                      // detachOnExit and the fixture's: done at environment teardown

  ~AddonData();
};

AddonData& Data(Napi::Env env);

void InitErrors(Napi::Env env, Napi::Object exports);
void InitLayout(Napi::Env env, Napi::Object exports);
void InitControl(Napi::Env env, Napi::Object exports);
void InitDevice(Napi::Env env, Napi::Object exports);
void InitChange(Napi::Env env, Napi::Object exports);
void InitFs(Napi::Env env, Napi::Object exports);
void InitList(Napi::Env env, Napi::Object exports);
void InitMount(Napi::Env env, Napi::Object exports);
void InitExit(Napi::Env env, Napi::Object exports);
void InitReap(Napi::Env env, Napi::Object exports);

}  // namespace loopdev
