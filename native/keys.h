// Property names used across the boundary, as internalized strings handed over by lib/ at
// load time. Looking a property up by a C string makes V8 hash and intern that string on
// every call; with the same internalized key it finds the property directly. lib/ passes
// the names in exactly this order (checked at load).
#pragma once

#include <napi.h>

namespace loopdev {

#define LOOPDEV_KEYS(X)                                                                          \
  X(backingDevice) X(backingFd) X(backingFile) X(backingInode) X(backingPath) X(blockSize)      \
  X(bound) X(checkIdentity) X(cleared) X(code) X(controlFd) X(device) X(diskseq) X(errno)      \
  X(fd) X(flags) X(fromSysfs) X(keepFd) X(label) X(legacy) X(length) X(lockControl) X(major)    \
  X(message) X(minor) X(number) X(offset) X(partitionErrors) X(partitions) X(path) X(released) \
  X(sectorSize) X(size) X(sizeLimit) X(start) X(syscall)

enum Key : int {
#define LOOPDEV_KEY_ENUM(name) k_##name,
  LOOPDEV_KEYS(LOOPDEV_KEY_ENUM)
#undef LOOPDEV_KEY_ENUM
  kKeyCount
};

// The key as a JavaScript string (internalized once lib/ has called setKeys()).
napi_value KeyOf(Napi::Env env, Key key);

void InitKeys(Napi::Env env, Napi::Object exports);

}  // namespace loopdev
