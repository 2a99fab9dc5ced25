// Errors cross into JavaScript as the library's own LoopError, built by a factory that lib/
// hands over at load time, so that errno, syscall and path survive intact (never only in a
// message string), on the sync and the async path alike.
#include <cstring>

#include "addon.h"
#include "op.h"

namespace loopdev {

Napi::Value MakeError(Napi::Env env, const Failure& failure) {
  Napi::Object details = Napi::Object::New(env);
  if (failure.code != nullptr) {
    details.Set("code", failure.code);
    details.Set("message", failure.message);
  } else {
    details.Set("errno", failure.err);
    details.Set("syscall", failure.syscall);
  }
  if (!failure.path.empty()) details.Set("path", failure.path);
  if (failure.device >= 0) details.Set("device", failure.device);

  AddonData& data = Data(env);
  if (data.errorFactory.IsEmpty()) {
    // Only reachable if lib/core/addon.ts did not call setErrorFactory(); keep the facts anyway.
    Napi::Error error = Napi::Error::New(env, failure.code ? failure.message : strerror(failure.err));
    error.Value().Set("details", details);
    return error.Value();
  }
  return data.errorFactory.Call({details});
}

static Napi::Value SetErrorFactory(const Napi::CallbackInfo& info) {
  if (!info[0].IsFunction()) throw Napi::TypeError::New(info.Env(), "setErrorFactory needs a function");
  Data(info.Env()).errorFactory = Napi::Persistent(info[0].As<Napi::Function>());
  return info.Env().Undefined();
}

void InitErrors(Napi::Env env, Napi::Object exports) {
  exports.Set("setErrorFactory", Napi::Function::New(env, SetErrorFactory, "setErrorFactory"));
}

}  // namespace loopdev
