// Per-environment state: one copy for the main thread and one for each worker thread.
#pragma once

#include <napi.h>

#include <set>


namespace loopdev {

struct AddonData {
  Napi::FunctionReference errorFactory;  // lib/errors.ts fromNative()
  std::set<int> ownedFds;                 // closed at environment teardown
  Napi::Reference<Napi::Value> scratch;  // a Float64Array: results of sync calls (see ResultSlots)
  double* scratchNumbers = nullptr;       // its elements
  Napi::Reference<Napi::Value> stepNumbers;  // a Float64Array: the numbers of the next hot step (see StepNumbers)
  const double* stepNumbersData = nullptr;
  bool inSyncResult = false;

  ~AddonData();
};

AddonData& Data(Napi::Env env);

void InitErrors(Napi::Env env, Napi::Object exports);
void InitStepNumbers(Napi::Env env, Napi::Object exports);
void InitControl(Napi::Env env, Napi::Object exports);
void InitDevice(Napi::Env env, Napi::Object exports);
void InitFs(Napi::Env env, Napi::Object exports);
void InitList(Napi::Env env, Napi::Object exports);
void InitMount(Napi::Env env, Napi::Object exports);

}  // namespace loopdev
