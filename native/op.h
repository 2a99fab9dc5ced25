// The shape every native entry point shares.
//
// A kernel step is written once, as an "Op": a constructor that copies its arguments out of
// JavaScript (on the main thread), Run() that makes the system calls and touches no N-API
// (so it can run on a worker thread), and Result() that turns the outcome into JavaScript
// (on the main thread again). Export<Op>() then publishes it twice: `name.sync` runs it on the
// calling thread, `name.async` runs it on Node's thread pool and returns a Promise.
//
// The calling convention, the same for every Op: plain positional arguments (numbers,
// strings, a Float64Array of partitions) in the order layout.h gives the step, read by name
// (Arg::step::name); a plain value out, or the caller's Float64Array, passed last, filled in
// the slots layout.h names. lib/core/addon.ts types it.
#pragma once

#include <napi.h>
#include <sys/stat.h>

#include <atomic>
#include <cstdint>
#include <string>
#include <vector>

#include "layout.h"

namespace loopdev {

// What went wrong in Run(): the errno and the system call, like Node's own system errors,
// or a library code (ERR_LOOP_*) when the kernel did not fail but refused us by its answer.
// `stage` says which step of the operation failed (layout.h's LOOPDEV_STAGES): lib/ decides
// on retries by it, never by the text of `syscall`, which is for people.
struct Failure {
  int err = 0;
  const char* syscall = "";
  std::string path;
  int device = -1;             // the loop device number the step was working on, if any
  const char* code = nullptr;  // ERR_LOOP_* instead of an errno name
  std::string message;         // only with `code`
  Stage stage = Stage::none;

  bool Fail(int e, const char* call, std::string where = std::string()) {
    err = e;
    syscall = call;
    path = std::move(where);
    return false;
  }
  bool Fail(Stage at, int e, const char* call, std::string where = std::string()) {
    stage = at;
    return Fail(e, call, std::move(where));
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
// One owner per fd: an fd is either in the environment's owned set or in the hands of exactly
// one step. A step that will close an owned fd takes it out of the set on the main thread,
// before any thread-pool thread can close it, so that no second closer (another step, the
// teardown) can close a number the kernel has meanwhile given to someone else's file.
void AdoptFd(Napi::Env env, int fd);
bool ReleaseFd(Napi::Env env, int fd);
bool OwnsFd(Napi::Env env, int fd);

// A step's name and its arguments' names in order (layout.h), for the layout export and for
// messages. Constant data (no destructor), as a worker may still call a step at process exit.
struct StepLayout {
  static constexpr size_t kMax = 16;  // no step takes more (checked below)
  const char* step;
  size_t count;
  const char* arguments[kMax];
};
// nullptr for a step layout.h does not list.
const StepLayout* FindStepLayout(const std::string& step);

// The arguments of one call, fetched with one napi_get_cb_info into a fixed array (node-addon-
// api's CallbackInfo fetches twice and allocates beyond six). Missing ones read as undefined.
// The same call fetches the step's layout (the function's data), which names them in messages.
class Args {
 public:
  static constexpr size_t kMax = StepLayout::kMax;
  Args(napi_env env, napi_callback_info info);
  Napi::Env Env() const { return Napi::Env(env_); }
  // index < kMax: no step takes more (checked below)
  Napi::Value operator[](size_t index) const { return Napi::Value(env_, argv_[index]); }
  // "argument 2 (backingFd) of attach", for messages
  std::string Describe(size_t index) const;

 private:
  napi_env env_;
  napi_value argv_[kMax];
  const StepLayout* layout_ = nullptr;
};
#define LOOPDEV_FITS_ARGS(step) static_assert(Arg::step::kCount <= Args::kMax, #step " takes more than Args holds");
LOOPDEV_STEPS(LOOPDEV_FITS_ARGS)
#undef LOOPDEV_FITS_ARGS

// Argument readers. lib/ validates everything first, but the addon trusts nothing it is
// handed: each reader checks type and range and throws the library's LoopError
// (ERR_LOOP_INVALID_ARGUMENT, or ENAMETOOLONG for a path) instead of casting, so that no value
// is ever truncated, rounded or read out of bounds. `Args` names the step in messages.
int32_t ArgInt(const Args& args, size_t index, int32_t min = INT32_MIN, int32_t max = INT32_MAX);
bool ArgBool(const Args& args, size_t index);
// An unsigned 64-bit value: a safe integer number (below 2^53) or a bigint.
uint64_t ArgU64(const Args& args, size_t index);
// A string, whole (never a prefix), without NUL bytes, of at most `maxBytes` bytes of UTF-8.
std::string ArgString(const Args& args, size_t index, size_t maxBytes = SIZE_MAX);
// A path: a string shorter than PATH_MAX bytes (ENAMETOOLONG otherwise, as the kernel would
// answer; a prefix is never used).
std::string ArgPath(const Args& args, size_t index);
// An optional string argument: undefined reads as empty.
std::string ArgOptionalString(const Args& args, size_t index, size_t maxBytes = SIZE_MAX);
// Throws the LoopError for argument `index` (ERR_LOOP_INVALID_ARGUMENT) saying what it must be.
[[noreturn]] void InvalidArg(const Args& args, size_t index, const std::string& what);

// What every Op may add to the three steps above (see the header comment):
//  - Settle(env, delivered): on the main thread, after Result() went to the caller (delivered)
//    or could not (an async call whose environment is being torn down). Fds the caller now
//    owns are adopted here; what an undelivered step made is undone.
//  - Abandon(): the same undo without any environment, for a step that finished but whose
//    completion never ran (process.exit() on the main thread; see AbandonUndelivered).
//  - Persist(): called before an async call is queued, so that arguments Result() still
//    needs (an OutArray) outlive the JavaScript call that passed them.
//  - Unwind(env, delivered): on the main thread, after Run() failed. A step that took an fd
//    from the owned set (see TakeOwnedFd) and did not close it gives it back here, or closes
//    it when the environment is going away (not delivered).
struct Step {
  Failure failure;
  void Settle(Napi::Env, bool) {}
  void Abandon() {}
  void Persist(Napi::Env) {}
  void Unwind(Napi::Env, bool) {}
};

// A step whose result is an fd the addon owns from then on (closed at environment teardown):
// adopted when the caller hears of it, closed when it cannot.
struct FdStep : Step {
  int fd = -1;
  Napi::Value Result(Napi::Env env) { return Napi::Number::New(env, fd); }
  void Settle(Napi::Env env, bool delivered);
  void Abandon();
};

// A C++ exception out of an Op (a TypeError from an argument reader, a failed N-API call)
// becomes the JavaScript exception of the call, as node-addon-api's own wrapper does.
template <class Body>
napi_value Guarded(Body body) {
  try {
    return body();
  } catch (const Napi::Error& error) {
    error.ThrowAsJavaScriptException();
    return nullptr;
  }
}

template <class Op>
napi_value RunSync(napi_env env, napi_callback_info info) {
  return Guarded([&]() -> napi_value {
    Op op{Args(env, info)};
    if (!op.Run()) {
      op.Unwind(Napi::Env(env), true);
      throw Napi::Error(env, MakeError(env, op.failure));
    }
    // What Run() made is the caller's only once they have the result: if building it throws,
    // it is undone here, as an async call's undelivered result is.
    Napi::Value result;
    try {
      result = op.Result(Napi::Env(env));
    } catch (...) {
      op.Settle(Napi::Env(env), false);
      throw;
    }
    op.Settle(Napi::Env(env), true);
    return result;
  });
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
  static napi_value Start(napi_env env, napi_callback_info info) {
    return Guarded([&]() -> napi_value { return Queue(env, Args(env, info)); });
  }

  void Abandon() override {
    if (succeeded_) op_.Abandon();
  }

 private:
  explicit AsyncCall(const Args& args) : op_(args) {}

  static napi_value Queue(napi_env env, const Args& args) {
    auto* call = new AsyncCall(args);  // the Op copies its arguments here (may throw TypeError)
    call->op_.Persist(env);
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
      NAPI_THROW_IF_FAILED(env, status, nullptr);
    }
    return promise;
  }

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
    else call->op_.Unwind(Napi::Env(env), status == napi_ok);
    napi_delete_async_work(env, call->work_);
    delete call;
  }

  // Whether the result reached the caller. A result that cannot be built rejects the promise
  // with why (what the step made is then undone, as for any undelivered result): a promise is
  // never left pending while its environment lives.
  bool Deliver(napi_env env) noexcept {
    try {
      if (succeeded_) return napi_resolve_deferred(env, deferred_, op_.Result(Napi::Env(env))) == napi_ok;
      // A failed step undid its own work: only the error is lost if it cannot be delivered.
      return napi_reject_deferred(env, deferred_, MakeError(Napi::Env(env), op_.failure)) == napi_ok;
    } catch (const Napi::Error& error) {
      napi_reject_deferred(env, deferred_, error.Value());
      return false;
    } catch (...) {
      return false;
    }
  }

  Op op_;
  bool succeeded_ = false;
  napi_deferred deferred_ = nullptr;
  napi_async_work work_ = nullptr;
};

Napi::Value NewFunction(Napi::Env env, const std::string& name, napi_callback callback, const StepLayout* layout);

// exports[name] = { sync, async }: the step on the calling thread, and its Promise form. A step
// without an argument layout in layout.h fails the addon's load, so that every step JavaScript
// can call has its argument order in the `layout` export.
template <class Op>
void Export(Napi::Env env, Napi::Object exports, const std::string& name) {
  const StepLayout* layout = FindStepLayout(name);
  if (layout == nullptr) throw Napi::Error::New(env, "loopdev: step " + name + " has no argument layout in native/layout.h");
  Napi::Object step = Napi::Object::New(env);
  step.Set("sync", NewFunction(env, name, RunSync<Op>, layout));
  step.Set("async", NewFunction(env, name + "Async", AsyncCall<Op>::Start, layout));
  exports.Set(name, step);
}

// The caller's Float64Array that Result() fills (its last argument), as Node's fs binding fills
// its stat array: no array is allocated for a result (measured with callgrind, a new
// ArrayBuffer per call cost more than the rest of the addon's work on a cycle). It is held by
// a reference until Result() runs, so an async call can fill it at its completion.
class OutArray {
 public:
  // At least `minimum` slots, checked before Run(): a result that cannot be delivered would
  // have to be undone.
  OutArray(const Args& args, size_t index, size_t minimum);
  // Keeps the array alive until the Op is destroyed (an async call: see Step::Persist).
  void Persist(Napi::Env env) { ref_ = Napi::Reference<Napi::Value>::New(Napi::Value(env, value_), 1); }
  // Where Result() writes: the `minimum` slots checked at construction. (The memory of an
  // ArrayBuffer does not move.)
  double* Slots() const { return data_; }
  // A 64-bit value in two slots, the low 32 bits at `at` and the high ones after it: a double
  // holds every integer only up to 2^53, and inodes (overlayfs with xino), device numbers and
  // diskseq must arrive exact. lib/core/addon.ts's u64() reads them back.
  static void SetU64(double* slots, size_t at, uint64_t value) {
    slots[at] = static_cast<double>(value & 0xffffffffu);
    slots[at + 1] = static_cast<double>(value >> 32);
  }

 private:
  napi_value value_;
  Napi::Reference<Napi::Value> ref_;
  double* data_ = nullptr;
  size_t length_ = 0;
};

// Partitions passed as a Float64Array of (number, start, length) triples (bytes), or undefined
// for none: anything else, a partial triple, or a value that is not a safe non-negative
// integer is refused.
struct Partition {
  int number;
  uint64_t start;
  uint64_t length;
};
std::vector<Partition> ArgPartitions(const Args& args, size_t index);

// open(path, flags | O_CLOEXEC); with noFollow, no symbolic link anywhere in the path is
// followed (openat2 RESOLVE_NO_SYMLINKS, kernel 5.6+; before that a walk of the path with
// O_NOFOLLOW on every component), for privileged callers that take a path from a less trusted
// one, as util-linux 2.42 does. The fd, or -1 with errno set (ELOOP for a symbolic link).
int OpenPath(const std::string& path, int flags, bool noFollow);

// The backing file behind `fd` is one the kernel can bind: a regular file or a block device
// (it answers anything else with a bare EINVAL). Fills *st; false with ERR_LOOP_INVALID_BACKING
// (or fstat's errno) in *failure. `path` names it in the message ('' when the caller gave an fd).
bool CheckBackingType(int fd, const std::string& path, struct stat* st, Failure* failure);

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
