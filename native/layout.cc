// `layout`: the slot names of each result array in order, and attach's mode bits by name.
#include "layout.h"

#include "addon.h"

namespace loopdev {

static Napi::Array Names(Napi::Env env, std::initializer_list<const char*> names) {
  Napi::Array array = Napi::Array::New(env, names.size());
  uint32_t i = 0;
  for (const char* name : names) array.Set(i++, name);
  return array;
}

void InitLayout(Napi::Env env, Napi::Object exports) {
#define LOOPDEV_SLOT_NAME(name) #name,
  Napi::Object layout = Napi::Object::New(env);
  layout.Set("attach", Names(env, {LOOPDEV_ATTACH_SLOTS(LOOPDEV_SLOT_NAME)}));
  layout.Set("detach", Names(env, {LOOPDEV_DETACH_SLOTS(LOOPDEV_SLOT_NAME)}));
  layout.Set("list", Names(env, {LOOPDEV_LIST_SLOTS(LOOPDEV_SLOT_NAME)}));
  layout.Set("stages", Names(env, {LOOPDEV_STAGES(LOOPDEV_SLOT_NAME)}));
#undef LOOPDEV_SLOT_NAME
  Napi::Object modes = Napi::Object::New(env);
#define LOOPDEV_MODE_SET(name, bit) modes.Set(#name, bit);
  LOOPDEV_ATTACH_MODES(LOOPDEV_MODE_SET)
#undef LOOPDEV_MODE_SET
  layout.Set("attachMode", modes);
  Napi::Object changes = Napi::Object::New(env);
#define LOOPDEV_CHANGE_SET(name, bit) changes.Set(#name, bit);
  LOOPDEV_STATUS_CHANGES(LOOPDEV_CHANGE_SET)
#undef LOOPDEV_CHANGE_SET
  layout.Set("statusChange", changes);
  exports.Set("layout", layout);
}

}  // namespace loopdev
