// stat and mknod straight from the kernel. glibc before 2.33 exports no stat, fstat, lstat,
// fstatat or mknod (its headers turn them into calls of __xstat and __xmknod); the prebuilt
// binaries, linked for glibc 2.28, got versions of them that fail without setting errno (an
// EPERM from mknod arrived as errno 0). The system calls are the same on every libc and on both
// architectures built (x86_64 and arm64 share struct stat with the kernel).
#pragma once

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

namespace loopdev {

inline int Fstatat(int dir, const char* path, struct stat* st, int flags) {
  return static_cast<int>(syscall(SYS_newfstatat, dir, path, st, flags));
}
inline int Fstat(int fd, struct stat* st) { return Fstatat(fd, "", st, AT_EMPTY_PATH); }
inline int Lstat(const char* path, struct stat* st) { return Fstatat(AT_FDCWD, path, st, AT_SYMLINK_NOFOLLOW); }
inline int Mknod(const char* path, mode_t mode, dev_t device) {
  return static_cast<int>(syscall(SYS_mknodat, AT_FDCWD, path, mode, device));
}

}  // namespace loopdev
