#include "keys.h"

#include <string>

#include "addon.h"

namespace loopdev {

static const char* const kKeyNames[] = {
#define LOOPDEV_KEY_NAME(name) #name,
    LOOPDEV_KEYS(LOOPDEV_KEY_NAME)
#undef LOOPDEV_KEY_NAME
};

napi_value KeyOf(Napi::Env env, Key key) {
  AddonData& data = Data(env);
  if (data.keys.IsEmpty()) return Napi::String::New(env, kKeyNames[key]);  // before setKeys()
  napi_value name;
  napi_get_element(env, data.keys.Value(), static_cast<uint32_t>(key), &name);
  return name;
}

// setKeys(names): names[i] must be kKeyNames[i]; a mismatch is a build error in lib/.
static Napi::Value SetKeys(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsArray()) throw Napi::TypeError::New(env, "setKeys needs an array of names");
  Napi::Array names = info[0].As<Napi::Array>();
  if (names.Length() != kKeyCount) throw Napi::Error::New(env, "setKeys: expected " + std::to_string(kKeyCount) + " names");
  for (int i = 0; i < kKeyCount; i++) {
    Napi::Value name = names.Get(static_cast<uint32_t>(i));
    if (!name.IsString() || name.As<Napi::String>().Utf8Value() != kKeyNames[i]) {
      throw Napi::Error::New(env, std::string("setKeys: name ") + std::to_string(i) + " should be " + kKeyNames[i]);
    }
  }
  Data(env).keys = Napi::Persistent(names.As<Napi::Object>());
  return env.Undefined();
}

void InitKeys(Napi::Env env, Napi::Object exports) {
  exports.Set("setKeys", Napi::Function::New(env, SetKeys, "setKeys"));
  exports.Set("keyNames", [&] {
    Napi::Array names = Napi::Array::New(env, kKeyCount);
    for (int i = 0; i < kKeyCount; i++) names.Set(static_cast<uint32_t>(i), kKeyNames[i]);
    return names;
  }());
}

}  // namespace loopdev
