// What every entry point shares: argument readers, result arrays, owned fds (see op.h).
#include "op.h"

#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <climits>

#include <cstdlib>
#include <mutex>
#include <string>

#include "addon.h"
#include "sys.h"

namespace loopdev {

void FdStep::Settle(Napi::Env env, bool delivered) {
  if (delivered) AdoptFd(env, fd);
  else Abandon();
}

void FdStep::Abandon() { close(fd); }

void AdoptFd(Napi::Env env, int fd) { Data(env).ownedFds.insert(fd); }

bool ReleaseFd(Napi::Env env, int fd) { return Data(env).ownedFds.erase(fd) > 0; }

bool OwnsFd(Napi::Env env, int fd) { return Data(env).ownedFds.count(fd) > 0; }

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

// Before openat2: each directory of the path opened with O_PATH | O_NOFOLLOW, the last
// component with O_NOFOLLOW; a symbolic link anywhere answers ELOOP (or ENOTDIR).
static int OpenWalkingNoFollow(const std::string& path, int flags) {
  Fd dir(open(path.size() > 0 && path[0] == '/' ? "/" : ".", O_PATH | O_DIRECTORY | O_CLOEXEC));
  if (dir.get() < 0) return -1;
  size_t start = 0;
  for (;;) {
    while (start < path.size() && path[start] == '/') start++;
    size_t end = path.find('/', start);
    if (end == std::string::npos || path.find_first_not_of('/', end) == std::string::npos) {
      const std::string last = path.substr(start, end == std::string::npos ? std::string::npos : end - start);
      return openat(dir.get(), last.empty() ? "." : last.c_str(), flags | O_NOFOLLOW | O_CLOEXEC);
    }
    const std::string part = path.substr(start, end - start);
    int next = openat(dir.get(), part.c_str(), O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (next < 0) {
      // A symbolic link to a directory answers ENOTDIR here; say ELOOP, as openat2 does.
      struct stat st;
      if (errno == ENOTDIR && Fstatat(dir.get(), part.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISLNK(st.st_mode)) errno = ELOOP;
      return -1;
    }
    dir.reset(next);
    start = end + 1;
  }
}

int OpenPath(const std::string& path, int flags, bool noFollow) {
  if (!noFollow) return open(path.c_str(), flags | O_CLOEXEC);
  struct open_how how = {};
  how.flags = static_cast<__u64>(flags | O_CLOEXEC);
  how.resolve = RESOLVE_NO_SYMLINKS;
  int fd = static_cast<int>(syscall(SYS_openat2, AT_FDCWD, path.c_str(), &how, sizeof how));
  if (fd >= 0 || errno != ENOSYS) return fd;
  return OpenWalkingNoFollow(path, flags);
}

bool CheckBackingType(int fd, const std::string& path, struct stat* st, Failure* failure) {
  if (Fstat(fd, st) != 0) return failure->Fail(Stage::backing, errno, "fstat", path);
  if (S_ISREG(st->st_mode) || S_ISBLK(st->st_mode)) return true;
  return failure->Refuse("ERR_LOOP_INVALID_BACKING", (path.empty() ? std::string("the file") : path) + " is not a regular file or a block device", path);
}

Fd::~Fd() {
  if (fd_ >= 0) close(fd_);
}

void Fd::reset(int fd) {
  if (fd_ >= 0) close(fd_);
  fd_ = fd;
}

Args::Args(napi_env env, napi_callback_info info) : env_(env) {
  size_t count = kMax;
  void* data = nullptr;
  NAPI_THROW_IF_FAILED_VOID(env, napi_get_cb_info(env, info, &count, argv_, nullptr, &data));
  layout_ = static_cast<const StepLayout*>(data);
}

std::string Args::Describe(size_t index) const {
  std::string text = "argument " + std::to_string(index);
  if (layout_ == nullptr) return text;
  if (index < layout_->count) text += std::string(" (") + layout_->arguments[index] + ")";
  return text + " of " + layout_->step;
}

Napi::Value NewFunction(Napi::Env env, const std::string& name, napi_callback callback, const StepLayout* layout) {
  napi_value function;
  // The layout is static (layout.cc): the function may point at it for as long as it lives.
  void* data = const_cast<StepLayout*>(layout);
  NAPI_THROW_IF_FAILED(env, napi_create_function(env, name.c_str(), name.size(), callback, data, &function), Napi::Value());
  return Napi::Value(env, function);
}

void InvalidArg(const Args& args, size_t index, const std::string& what) {
  Failure failure;
  failure.Refuse("ERR_LOOP_INVALID_ARGUMENT", args.Describe(index) + " must be " + what);
  throw Napi::Error(args.Env(), MakeError(args.Env(), failure));
}

static void Check(bool ok, const Args& args, size_t index, const char* what) {
  if (!ok) InvalidArg(args, index, what);
}

// The largest integer a double holds exactly, and so the largest a number argument may be.
constexpr double kMaxSafe = 9007199254740991.0;

static double ArgNumber(const Args& args, size_t index) {
  double value = 0;
  Check(napi_get_value_double(args.Env(), args[index], &value) == napi_ok, args, index, "a number");
  return value;
}

int32_t ArgInt(const Args& args, size_t index, int32_t min, int32_t max) {
  const double value = ArgNumber(args, index);
  // NaN fails both comparisons; a fraction fails the last. Only then is the cast defined.
  if (!(value >= min && value <= max) || value != static_cast<double>(static_cast<int32_t>(value))) {
    InvalidArg(args, index, "an integer from " + std::to_string(min) + " to " + std::to_string(max));
  }
  return static_cast<int32_t>(value);
}

bool ArgBool(const Args& args, size_t index) {
  bool value = false;
  Check(napi_get_value_bool(args.Env(), args[index], &value) == napi_ok, args, index, "a boolean");
  return value;
}

uint64_t ArgU64(const Args& args, size_t index) {
  // A number first: lib/ passes one unless the value needs a bigint.
  double number = 0;
  if (napi_get_value_double(args.Env(), args[index], &number) == napi_ok) {
    Check(number >= 0 && number <= kMaxSafe && number == static_cast<double>(static_cast<uint64_t>(number)), args, index,
          "a non-negative safe integer (or a bigint)");
    return static_cast<uint64_t>(number);
  }
  bool lossless = true;
  uint64_t value = 0;
  Check(napi_get_value_bigint_uint64(args.Env(), args[index], &value, &lossless) == napi_ok && lossless, args, index,
        "an unsigned 64-bit integer");
  return value;
}

std::string ArgString(const Args& args, size_t index, size_t maxBytes) {
  // One copy into a buffer as long as any path: measuring the string first would be a second
  // walk over it. The copy stops short of a character that does not fit whole, so a string
  // that came near the end of the buffer may have been cut: that one is read again, whole.
  char buffer[PATH_MAX];
  size_t length = 0;
  napi_status status = napi_get_value_string_utf8(args.Env(), args[index], buffer, sizeof buffer, &length);
  Check(status == napi_ok, args, index, "a string");
  std::string value;
  if (length + 4 < sizeof buffer) {
    value.assign(buffer, length);
  } else {
    Check(napi_get_value_string_utf8(args.Env(), args[index], nullptr, 0, &length) == napi_ok, args, index, "a string");
    value.resize(length + 1);
    Check(napi_get_value_string_utf8(args.Env(), args[index], value.data(), length + 1, &length) == napi_ok, args, index,
          "a string");
    value.resize(length);
  }
  // A NUL would end the string at the system call: a different path or label than given.
  Check(value.find('\0') == std::string::npos, args, index, "a string without NUL bytes");
  if (value.size() > maxBytes) InvalidArg(args, index, "at most " + std::to_string(maxBytes) + " bytes of UTF-8");
  return value;
}

std::string ArgPath(const Args& args, size_t index) {
  std::string path = ArgString(args, index);
  if (path.size() >= PATH_MAX) {
    Failure failure;
    failure.Fail(ENAMETOOLONG, "open", path);
    throw Napi::Error(args.Env(), MakeError(args.Env(), failure));
  }
  return path;
}

std::string ArgOptionalString(const Args& args, size_t index, size_t maxBytes) {
  return args[index].IsUndefined() ? std::string() : ArgString(args, index, maxBytes);
}

// The typed array at `index`, if it is one of `type`: its element count and memory.
static bool TypedArrayOf(const Args& args, size_t index, napi_typedarray_type type, size_t* length, void** data) {
  napi_typedarray_type found = napi_int8_array;
  if (napi_get_typedarray_info(args.Env(), args[index], &found, length, data, nullptr, nullptr) != napi_ok) return false;
  return found == type;
}

OutArray::OutArray(const Args& args, size_t index, size_t minimum) : value_(args[index]) {
  // One query for type, length and memory (each of node-addon-api's accessors asks again).
  void* data = nullptr;
  Check(TypedArrayOf(args, index, napi_float64_array, &length_, &data), args, index, "a Float64Array");
  if (length_ < minimum) InvalidArg(args, index, "a Float64Array of at least " + std::to_string(minimum) + " elements");
  data_ = static_cast<double*>(data);
}

std::vector<Partition> ArgPartitions(const Args& args, size_t index) {
  std::vector<Partition> partitions;
  if (args[index].IsUndefined()) return partitions;
  size_t length = 0;
  void* data = nullptr;
  Check(TypedArrayOf(args, index, napi_float64_array, &length, &data) && length % 3 == 0, args, index,
        "undefined or a Float64Array of (number, start, length) triples");
  const double* triples = static_cast<const double*>(data);
  const auto whole = [](double value, double max) { return value >= 0 && value <= max && value == static_cast<double>(static_cast<uint64_t>(value)); };
  for (size_t i = 0; i < length; i += 3) {
    Check(whole(triples[i], 0xfffff) && triples[i] >= 1 && whole(triples[i + 1], kMaxSafe) && whole(triples[i + 2], kMaxSafe), args, index,
          "(number, start, length) triples of safe non-negative integers, numbered from 1");
    partitions.push_back(
        {static_cast<int>(triples[i]), static_cast<uint64_t>(triples[i + 1]), static_cast<uint64_t>(triples[i + 2])});
  }
  return partitions;
}

}  // namespace loopdev
