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

namespace loopdev {

void FdStep::Settle(Napi::Env env, bool delivered) {
  if (delivered) AdoptFd(env, fd);
  else Abandon();
}

void FdStep::Abandon() { close(fd); }

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
      if (errno == ENOTDIR && fstatat(dir.get(), part.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISLNK(st.st_mode)) errno = ELOOP;
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

Fd::~Fd() {
  if (fd_ >= 0) close(fd_);
}

void Fd::reset(int fd) {
  if (fd_ >= 0) close(fd_);
  fd_ = fd;
}

Args::Args(napi_env env, napi_callback_info info) : env_(env) {
  size_t count = kMax;
  NAPI_THROW_IF_FAILED_VOID(env, napi_get_cb_info(env, info, &count, argv_, nullptr, nullptr));
}

Napi::Value NewFunction(Napi::Env env, const std::string& name, napi_callback callback) {
  napi_value function;
  NAPI_THROW_IF_FAILED(env, napi_create_function(env, name.c_str(), name.size(), callback, nullptr, &function), Napi::Value());
  return Napi::Value(env, function);
}

static void Check(bool ok, const Args& args, size_t index, const char* what) {
  if (!ok) throw Napi::TypeError::New(args.Env(), "argument " + std::to_string(index) + " must be " + what);
}

static double ArgNumber(const Args& args, size_t index) {
  double value = 0;
  Check(napi_get_value_double(args.Env(), args[index], &value) == napi_ok, args, index, "a number");
  return value;
}

int32_t ArgInt(const Args& args, size_t index) { return static_cast<int32_t>(ArgNumber(args, index)); }

bool ArgBool(const Args& args, size_t index) {
  bool value = false;
  Check(napi_get_value_bool(args.Env(), args[index], &value) == napi_ok, args, index, "a boolean");
  return value;
}

uint64_t ArgU64(const Args& args, size_t index) {
  // A number first: lib/ passes one unless the value needs a bigint.
  double number = 0;
  if (napi_get_value_double(args.Env(), args[index], &number) == napi_ok) return static_cast<uint64_t>(number);
  bool lossless = true;
  uint64_t value = 0;
  Check(napi_get_value_bigint_uint64(args.Env(), args[index], &value, &lossless) == napi_ok && lossless, args, index,
        "an unsigned 64-bit integer");
  return value;
}

std::string ArgString(const Args& args, size_t index) {
  // One copy into a buffer as long as any path: Utf8Value() measures the string first, a
  // second walk over it. A string that may not have fit takes that way.
  char buffer[PATH_MAX];
  size_t length = 0;
  napi_status status = napi_get_value_string_utf8(args.Env(), args[index], buffer, sizeof buffer, &length);
  Check(status == napi_ok, args, index, "a string");
  if (length < sizeof buffer - 1) return std::string(buffer, length);
  return args[index].As<Napi::String>().Utf8Value();
}

std::string ArgOptionalString(const Args& args, size_t index) {
  return args[index].IsUndefined() ? std::string() : ArgString(args, index);
}

OutArray::OutArray(const Args& args, size_t index) : value_(args[index]) {
  // One query for type, length and memory (each of node-addon-api's accessors asks again).
  napi_typedarray_type type = napi_int8_array;
  void* data = nullptr;
  bool ok = napi_get_typedarray_info(args.Env(), args[index], &type, &length_, &data, nullptr, nullptr) == napi_ok;
  Check(ok && type == napi_float64_array, args, index, "a Float64Array");
  data_ = static_cast<double*>(data);
}

std::vector<Partition> ArgPartitions(const Args& args, size_t index) {
  std::vector<Partition> partitions;
  if (!args[index].IsTypedArray()) return partitions;
  Napi::Float64Array triples = args[index].As<Napi::Float64Array>();
  for (size_t i = 0; i + 2 < triples.ElementLength(); i += 3) {
    partitions.push_back(
        {static_cast<int>(triples[i]), static_cast<uint64_t>(triples[i + 1]), static_cast<uint64_t>(triples[i + 2])});
  }
  return partitions;
}

}  // namespace loopdev
