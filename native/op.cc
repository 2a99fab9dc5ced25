// What every entry point shares: argument readers, result arrays, owned fds (see op.h).
#include "op.h"

#include <climits>
#include <unistd.h>

#include <cstdlib>
#include <mutex>
#include <string>

#include "addon.h"
#include "status.h"

namespace loopdev {

void AdoptFd(Napi::Env env, int fd) { Data(env).ownedFds.insert(fd); }

bool ReleaseFd(Napi::Env env, int fd) { return Data(env).ownedFds.erase(fd) > 0; }

namespace {

// Every async call of every environment (main thread and workers) between queueing and
// completion, so that exit() can find those that finished but were never delivered.
std::mutex pendingMutex;
Pending* pendingHead = nullptr;
std::once_flag atExitOnce;

// process.exit() on the main thread joins libuv's threads (every queued call has run) and
// exits without running their completions: a device bound for a caller that is gone would
// stay bound. Nothing of N-API may be used here.
void AbandonUndelivered() {
  std::lock_guard<std::mutex> lock(pendingMutex);
  for (Pending* call = pendingHead; call != nullptr; call = call->next) {
    if (call->ran.load(std::memory_order_acquire)) call->Abandon();
  }
}

}  // namespace

void Register(Pending* call) {
  std::call_once(atExitOnce, [] { std::atexit(AbandonUndelivered); });
  std::lock_guard<std::mutex> lock(pendingMutex);
  call->previous = nullptr;
  call->next = pendingHead;
  if (pendingHead != nullptr) pendingHead->previous = call;
  pendingHead = call;
}

void Unregister(Pending* call) {
  std::lock_guard<std::mutex> lock(pendingMutex);
  if (call->previous != nullptr) call->previous->next = call->next;
  else pendingHead = call->next;
  if (call->next != nullptr) call->next->previous = call->previous;
}

Fd::~Fd() {
  if (fd_ >= 0) close(fd_);
}

void Fd::reset(int fd) {
  if (fd_ >= 0) close(fd_);
  fd_ = fd;
}

static void Check(bool ok, const Napi::CallbackInfo& info, size_t index, const char* what) {
  if (!ok) throw Napi::TypeError::New(info.Env(), "argument " + std::to_string(index) + " must be " + what);
}

int32_t ArgInt(const Napi::CallbackInfo& info, size_t index) {
  Check(info[index].IsNumber(), info, index, "a number");
  return info[index].As<Napi::Number>().Int32Value();
}

uint64_t ArgU64(const Napi::CallbackInfo& info, size_t index) {
  if (info[index].IsBigInt()) {
    bool lossless = false;
    uint64_t value = info[index].As<Napi::BigInt>().Uint64Value(&lossless);
    Check(lossless, info, index, "an unsigned 64-bit integer");
    return value;
  }
  Check(info[index].IsNumber(), info, index, "a number or bigint");
  return static_cast<uint64_t>(info[index].As<Napi::Number>().Int64Value());
}

std::string ArgString(const Napi::CallbackInfo& info, size_t index) {
  // One copy into a buffer as long as any path: Utf8Value() measures the string first, a
  // second walk over it. A string that may not have fit takes that way.
  char buffer[PATH_MAX];
  size_t length = 0;
  napi_status status = napi_get_value_string_utf8(info.Env(), info[index], buffer, sizeof buffer, &length);
  Check(status == napi_ok, info, index, "a string");
  if (length < sizeof buffer - 1) return std::string(buffer, length);
  return info[index].As<Napi::String>().Utf8Value();
}

std::string ArgOptionalString(const Napi::CallbackInfo& info, size_t index) {
  return info[index].IsUndefined() ? std::string() : ArgString(info, index);
}

const double* StepNumbers(Napi::Env env) { return Data(env).stepNumbersData; }

void InitStepNumbers(Napi::Env env, Napi::Object exports) {
  AddonData& data = Data(env);
  Napi::Float64Array numbers = Napi::Float64Array::New(env, kStepNumbers);
  data.stepNumbers = Napi::Persistent(static_cast<Napi::Value>(numbers));
  data.stepNumbersData = numbers.Data();  // an ArrayBuffer's memory does not move
  exports.Set("stepNumbers", numbers);
}

static constexpr size_t kScratchSlots = 512;

SyncResultScope::SyncResultScope(Napi::Env env) : env_(env) { Data(env).inSyncResult = true; }
SyncResultScope::~SyncResultScope() { Data(env_).inSyncResult = false; }

ResultArray ResultSlots(Napi::Env env, size_t count) {
  AddonData& data = Data(env);
  if (!data.inSyncResult || count > kScratchSlots) {
    Napi::Float64Array array = Napi::Float64Array::New(env, count);
    return {array, array.Data()};
  }
  if (data.scratch.IsEmpty()) {
    Napi::Float64Array array = Napi::Float64Array::New(env, kScratchSlots);
    data.scratch = Napi::Persistent(static_cast<Napi::Value>(array));
    data.scratchNumbers = array.Data();  // an ArrayBuffer's memory does not move
  }
  return {data.scratch.Value(), data.scratchNumbers};
}

std::vector<Partition> ArgPartitions(const Napi::CallbackInfo& info, size_t index) {
  std::vector<Partition> partitions;
  if (!info[index].IsTypedArray()) return partitions;
  Napi::Float64Array triples = info[index].As<Napi::Float64Array>();
  for (size_t i = 0; i + 2 < triples.ElementLength(); i += 3) {
    partitions.push_back(
        {static_cast<int>(triples[i]), static_cast<uint64_t>(triples[i + 1]), static_cast<uint64_t>(triples[i + 2])});
  }
  return partitions;
}

}  // namespace loopdev
