#include "status.h"

#include <dirent.h>
#include <linux/fs.h>
#include <linux/loop.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "op.h"
#include "sys.h"

namespace loopdev {

// How many minor bits each loop device takes: with loop.max_part=N the kernel gives each device
// 2^k minors (the smallest k with N < 2^k), the whole disk first. Read once per process.
static unsigned PartitionShift() {
  static const unsigned shift = [] {
    unsigned long maxPart = 0;
    if (FILE* file = fopen("/sys/module/loop/parameters/max_part", "re")) {
      if (fscanf(file, "%lu", &maxPart) != 1) maxPart = 0;
      fclose(file);
    }
    unsigned bits = 0;
    while (bits < 20 && (maxPart >> bits) != 0) bits++;
    return bits;
  }();
  return shift;
}

int CheckLoopDevice(int fd, Status* status, int expected) {
  struct stat st;
  if (Fstat(fd, &st) != 0) return errno;
  if (!S_ISBLK(st.st_mode) || major(st.st_rdev) != kLoopMajor) return ENOTBLK;
  const unsigned shift = PartitionShift();
  const unsigned minorNumber = minor(st.st_rdev);
  if ((minorNumber & ((1u << shift) - 1)) != 0) return ENOTBLK;  // a partition
  if (expected >= 0 && minorNumber >> shift != static_cast<unsigned>(expected)) return ENOTBLK;
  status->major = kLoopMajor;
  status->minor = minorNumber;
  status->number = minorNumber >> shift;
  return 0;
}

int ReadStatus(int fd, Status* status, const char** syscall, Detail detail) {
  struct loop_info64 info;
  memset(&info, 0, sizeof info);
  if (ioctl(fd, LOOP_GET_STATUS64, &info) != 0) {
    if (errno == ENXIO) {  // unbound: nothing more to ask
      status->bound = false;
      return 0;
    }
    *syscall = "ioctl(LOOP_GET_STATUS64)";
    return errno;
  }
  // The kernel's own word on which device this is, against what the device number said.
  if (info.lo_number != status->number) {
    *syscall = "ioctl(LOOP_GET_STATUS64)";
    return ENOTBLK;
  }
  status->bound = true;
  status->backingDevice = info.lo_device;
  status->backingInode = info.lo_inode;
  status->offset = info.lo_offset;
  status->sizeLimit = info.lo_sizelimit;
  status->flags = info.lo_flags;
  memcpy(status->label, info.lo_file_name, LO_NAME_SIZE);
  status->label[LO_NAME_SIZE] = '\0';
  // diskseq (5.15+) tells one binding of this device from the next; older kernels: 0.
  if (ioctl(fd, BLKGETDISKSEQ, &status->diskseq) != 0) status->diskseq = 0;
  if (detail == Detail::kBinding) return 0;

  if (ioctl(fd, BLKGETSIZE64, &status->size) != 0) {
    *syscall = "ioctl(BLKGETSIZE64)";
    return errno;
  }
  int sectorSize = 0;
  if (ioctl(fd, BLKSSZGET, &sectorSize) != 0) {
    *syscall = "ioctl(BLKSSZGET)";
    return errno;
  }
  status->sectorSize = static_cast<uint32_t>(sectorSize);
  return 0;
}

bool HasPartscan(int fd) {
  struct loop_info64 info;
  return ioctl(fd, LOOP_GET_STATUS64, &info) == 0 && (info.lo_flags & LO_FLAGS_PARTSCAN) != 0;
}

bool SysfsBound(uint32_t number) {
  // The canonical path: resolving the /sys/block/loopN symlink costs a few microseconds
  // on every call. Every loop device lives under devices/virtual.
  char path[64];
  snprintf(path, sizeof path, "/sys/devices/virtual/block/loop%u/loop", number);
  return access(path, F_OK) == 0;
}

bool SysfsDeviceExists(uint32_t number) {
  char path[64];
  snprintf(path, sizeof path, "/sys/devices/virtual/block/loop%u", number);
  return access(path, F_OK) == 0;
}

std::vector<int> SysfsPartitions(uint32_t number) {
  std::vector<int> partitions;
  char path[64], prefix[32];
  snprintf(path, sizeof path, "/sys/devices/virtual/block/loop%u", number);
  const size_t length = static_cast<size_t>(snprintf(prefix, sizeof prefix, "loop%up", number));
  DIR* dir = opendir(path);  // glibc opens it O_CLOEXEC
  if (dir == nullptr) return partitions;
  while (const struct dirent* entry = readdir(dir)) {
    if (strncmp(entry->d_name, prefix, length) == 0) partitions.push_back(atoi(entry->d_name + length));
  }
  closedir(dir);
  return partitions;
}

bool SysfsReleased(uint32_t number, bool partscan) {
  return !SysfsBound(number) && (!partscan || SysfsPartitions(number).empty());
}


}  // namespace loopdev
