// The shape every native entry point shares.
//
// A kernel step is written once, as an "Op": a constructor that copies its arguments out of
// JavaScript (on the main thread), Run() that makes the system calls and touches no N-API
// (so it can run on a worker thread), and Result() that turns the outcome into JavaScript
// (on the main thread again). Export<Op>() then publishes it twice: `name` runs it on the
// calling thread, `nameAsync` runs it in an AsyncWorker and returns a Promise.
#pragma once

#include <napi.h>

#include <atomic>
#include <cstdint>
#include <string>
#include <vector>


namespace loopdev {

// What went wrong in Run(): the errno and the system call, like Node's own system errors,
// or a library code (ERR_LOOP_*) when the kernel did not fail but refused us by its answer.
struct Failure {
  int err = 0;
  const char* syscall = "";
  std::string path;
  int device = -1;             // the loop device number the step was working on, if any
  const char* code = nullptr;  // ERR_LOOP_* instead of an errno name
  std::string message;         // only with `code`

  bool Fail(int e, const char* call, std::string where = std::string()) {
    err = e;
    syscall = call;
    path = std::move(where);
    return false;
  }
  bool Refuse(const char* libraryCode, std::string text, std::string where = std::string()) {
    code = libraryCode;
    message = std::move(text);
    path = std::move(where);
    return false;
  }
};

// Builds the library's LoopError (a constructor handed over by lib/ at load time).
Napi::Value MakeError(Napi::Env env, const Failure& failure);

// File descriptors this addon keeps for the caller (the cached control fd, devices held
// with AUTOCLEAR). They are closed when the Node environment (main thread or a worker) is
// torn down, so a terminated worker cannot leave a held loop device bound.
void AdoptFd(Napi::Env env, int fd);
bool ReleaseFd(Napi::Env env, int fd);

// Argument helpers: lib/ validates everything first, so these only guard against misuse.
int32_t ArgInt(const Napi::CallbackInfo& info, size_t index);
uint64_t ArgU64(const Napi::CallbackInfo& info, size_t index);
std::string ArgString(const Napi::CallbackInfo& info, size_t index);

// The numbers of a hot step, as lib/ wrote them into `stepNumbers` just before the call (see
// LOOPDEV_ATTACH_ARGS). The next call overwrites them, so an Op copies them in its constructor.
const double* StepNumbers(Napi::Env env);
// An optional string argument: undefined reads as empty.
std::string ArgOptionalString(const Napi::CallbackInfo& info, size_t index);
// A 64-bit count passed as two 32-bit halves, the high one at `high`.
inline uint64_t U64(const double* numbers, size_t high) {
  return (static_cast<uint64_t>(numbers[high]) << 32) | static_cast<uint64_t>(numbers[high + 1]);
}

// Marks the span in which ResultSlots() may hand out the scratch array.
class SyncResultScope {
 public:
  explicit SyncResultScope(Napi::Env env);
  ~SyncResultScope();

 private:
  Napi::Env env_;
};

// What every Op may add to the three steps above (see the header comment):
//  - Settle(env, delivered): on the main thread, after Result() went to the caller (delivered)
//    or could not (an async call whose environment is being torn down). Fds the caller now
//    owns are adopted here; what an undelivered step made is undone.
//  - Abandon(): the same undo without any environment, for a step that finished but whose
//    completion never ran (process.exit() on the main thread; see AbandonUndelivered).
struct Step {
  Failure failure;
  void Settle(Napi::Env, bool) {}
  void Abandon() {}
};

template <class Op>
Napi::Value RunSync(const Napi::CallbackInfo& info) {
  Op op(info);
  if (!op.Run()) {
    Napi::Value error = MakeError(info.Env(), op.failure);
    throw Napi::Error(info.Env(), error);
  }
  SyncResultScope scope(info.Env());
  Napi::Value result = op.Result(info.Env());
  op.Settle(info.Env(), true);
  return result;
}

// An async call from queueing until its completion ran. Node runs the completion of a call
// that finished while its environment is torn down (a terminated worker) with JavaScript
// disallowed; process.exit() on the main thread runs none at all, after libuv's threads
// have finished their work. Either way the promise cannot be settled, and what the step did
// (a device bound, an fd opened) would belong to nobody.
class Pending {
 public:
  virtual ~Pending() = default;
  virtual void Abandon() = 0;
  std::atomic<bool> ran{false};  // Run() has returned (set on the worker thread)
  Pending* previous = nullptr;
  Pending* next = nullptr;
};
void Register(Pending* call);
void Unregister(Pending* call);

// The Promise form of an Op, on Node's C API directly: nothing here may throw out of a
// completion callback (an exception there is std::terminate), so settling is checked by
// status, and a promise that cannot be settled any more is dropped quietly.
template <class Op>
class AsyncCall final : public Pending {
 public:
  static Napi::Value Start(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    auto* call = new AsyncCall(info);  // the Op copies its arguments here (may throw TypeError)
    napi_value promise;
    napi_value name;
    napi_status status = napi_create_promise(env, &call->deferred_, &promise);
    if (status == napi_ok) status = napi_create_string_latin1(env, "loopdev", NAPI_AUTO_LENGTH, &name);
    if (status == napi_ok) status = napi_create_async_work(env, nullptr, name, Execute, Complete, call, &call->work_);
    if (status == napi_ok) {
      Register(call);
      status = napi_queue_async_work(env, call->work_);
      if (status != napi_ok) Unregister(call);
    }
    if (status != napi_ok) {
      if (call->work_ != nullptr) napi_delete_async_work(env, call->work_);
      delete call;
      NAPI_THROW_IF_FAILED(env, status, Napi::Value());
    }
    return Napi::Value(env, promise);
  }

  void Abandon() override {
    if (succeeded_) op_.Abandon();
  }

 private:
  explicit AsyncCall(const Napi::CallbackInfo& info) : op_(info) {}

  static void Execute(napi_env, void* data) {
    auto* call = static_cast<AsyncCall*>(data);
    call->succeeded_ = call->op_.Run();
    call->ran.store(true, std::memory_order_release);
  }

  static void Complete(napi_env env, napi_status status, void* data) {
    auto* call = static_cast<AsyncCall*>(data);
    Unregister(call);
    const bool delivered = status == napi_ok && call->Deliver(env);
    if (call->succeeded_) call->op_.Settle(Napi::Env(env), delivered);
    napi_delete_async_work(env, call->work_);
    delete call;
  }

  bool Deliver(napi_env env) noexcept {
    try {
      if (succeeded_) return napi_resolve_deferred(env, deferred_, op_.Result(Napi::Env(env))) == napi_ok;
      // A failed step undid its own work: only the error is lost if it cannot be delivered.
      return napi_reject_deferred(env, deferred_, MakeError(Napi::Env(env), op_.failure)) == napi_ok;
    } catch (...) {
      return false;
    }
  }

  Op op_;
  bool succeeded_ = false;
  napi_deferred deferred_ = nullptr;
  napi_async_work work_ = nullptr;
};

template <class Op>
void Export(Napi::Env env, Napi::Object exports, const std::string& name) {
  exports.Set(name, Napi::Function::New(env, RunSync<Op>, name));
  exports.Set(name + "Async", Napi::Function::New(env, AsyncCall<Op>::Start, name + "Async"));
}

// Results as numbers in a Float64Array, the way Node's own fs binding returns stat: no
// object is built and no property looked up on the hot path (measured with callgrind,
// building result objects through N-API cost more than the rest of a cycle). A sync call
// gets a scratch array owned by the environment, which the caller reads before anything
// else can run; an async call gets its own array. Call only from Result().
// The sync scratch array's numbers are reached through a pointer kept at creation: rebuilding
// a Napi::Float64Array from the reference asked V8 for the buffer on every call.
struct ResultArray {
  Napi::Value value;  // what Result() returns
  double* numbers;    // where it writes
};
ResultArray ResultSlots(Napi::Env env, size_t count);

// Partitions passed as a Float64Array of (number, start, length) triples (bytes).
struct Partition {
  int number;
  uint64_t start;
  uint64_t length;
};
std::vector<Partition> ArgPartitions(const Napi::CallbackInfo& info, size_t index);

// A file descriptor closed on scope exit unless released.
class Fd {
 public:
  explicit Fd(int fd = -1) : fd_(fd) {}
  ~Fd();
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }
  int release() {
    int fd = fd_;
    fd_ = -1;
    return fd;
  }
  void reset(int fd = -1);

 private:
  int fd_;
};

}  // namespace loopdev
