// The shape every native entry point shares.
//
// A kernel step is written once, as an "Op": a constructor that copies its arguments out of
// JavaScript (on the main thread), Run() that makes the system calls and touches no N-API
// (so it can run on a worker thread), and Result() that turns the outcome into JavaScript
// (on the main thread again). Export<Op>() then publishes it twice: `name` runs it on the
// calling thread, `nameAsync` runs it in an AsyncWorker and returns a Promise.
#pragma once

#include <napi.h>

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

template <class Op>
Napi::Value RunSync(const Napi::CallbackInfo& info) {
  Op op(info);
  if (!op.Run()) {
    Napi::Value error = MakeError(info.Env(), op.failure);
    throw Napi::Error(info.Env(), error);
  }
  SyncResultScope scope(info.Env());
  return op.Result(info.Env());
}

template <class Op>
class OpWorker final : public Napi::AsyncWorker {
 public:
  explicit OpWorker(const Napi::CallbackInfo& info)
      : Napi::AsyncWorker(info.Env(), "loopdev"), op_(info), deferred_(Napi::Promise::Deferred::New(info.Env())) {}

  Napi::Promise Promise() const { return deferred_.Promise(); }

 protected:
  void Execute() override {
    if (!op_.Run()) SetError("failed");  // the details live in op_.failure
  }
  void OnOK() override { deferred_.Resolve(op_.Result(Env())); }
  // AsyncWorker's own error path only carries a message; reject with the full LoopError.
  void OnError(const Napi::Error&) override { deferred_.Reject(MakeError(Env(), op_.failure)); }

 private:
  Op op_;
  Napi::Promise::Deferred deferred_;
};

template <class Op>
Napi::Value RunAsync(const Napi::CallbackInfo& info) {
  auto* worker = new OpWorker<Op>(info);  // deletes itself after OnOK/OnError
  Napi::Promise promise = worker->Promise();
  worker->Queue();
  return promise;
}

template <class Op>
void Export(Napi::Env env, Napi::Object exports, const std::string& name) {
  exports.Set(name, Napi::Function::New(env, RunSync<Op>, name));
  exports.Set(name + "Async", Napi::Function::New(env, RunAsync<Op>, name + "Async"));
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
