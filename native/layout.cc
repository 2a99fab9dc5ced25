// `layout`: each step's argument names in order, the slot names of each result array in order,
// and attach's mode bits by name.
#include "layout.h"

#include "addon.h"
#include "op.h"

namespace loopdev {

static Napi::Array Names(Napi::Env env, const char* const* names, size_t count) {
  Napi::Array array = Napi::Array::New(env, count);
  for (size_t i = 0; i < count; i++) array.Set(static_cast<uint32_t>(i), names[i]);
  return array;
}

static Napi::Array Names(Napi::Env env, std::initializer_list<const char*> names) { return Names(env, names.begin(), names.size()); }

#define LOOPDEV_ARG_NAME(name) #name,
#define LOOPDEV_STEP_LAYOUT(step) {#step, Arg::step::kCount, {LOOPDEV_ARGS_##step(LOOPDEV_ARG_NAME)}},
static const StepLayout kStepLayouts[] = {LOOPDEV_STEPS(LOOPDEV_STEP_LAYOUT)};
#undef LOOPDEV_STEP_LAYOUT
#undef LOOPDEV_ARG_NAME

const StepLayout* FindStepLayout(const std::string& step) {
  for (const StepLayout& layout : kStepLayouts) {
    if (step == layout.step) return &layout;
  }
  return nullptr;
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
  Napi::Object arguments = Napi::Object::New(env);
  for (const StepLayout& step : kStepLayouts) arguments.Set(step.step, Names(env, step.arguments, step.count));
  layout.Set("arguments", arguments);
  exports.Set("layout", layout);
}

}  // namespace loopdev
