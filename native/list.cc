// Every bound loop device on the machine, in one call.
//
// sysfs alone would cost ten file reads per device; instead each bound device is opened once
// (read-only) and asked with ioctls, and sysfs gives only what ioctls cannot: the backing
// file's path and the partitions. A device whose node is missing or unreadable (a container's
// /dev) is described from sysfs instead.
#include <dirent.h>
#include <fcntl.h>
#include <linux/loop.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <string>
#include <vector>

#include "op.h"
#include "layout.h"
#include "status.h"

namespace loopdev {

namespace {

// Reads a small sysfs or procfs file, without the trailing newline. Returns the errno.
// `path` is relative to `dir` (a directory fd) unless absolute.
int ReadSmall(const std::string& path, std::string* out, int dir = AT_FDCWD) {
  int fd = openat(dir, path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return errno;
  char buffer[PATH_MAX + 64];
  ssize_t length = read(fd, buffer, sizeof buffer);
  int err = errno;
  close(fd);
  if (length < 0) return err;
  while (length > 0 && buffer[length - 1] == '\n') length--;
  out->assign(buffer, static_cast<size_t>(length));
  return 0;
}

uint64_t ReadNumber(const std::string& path, int dir) {
  std::string text;
  return ReadSmall(path, &text, dir) == 0 ? strtoull(text.c_str(), nullptr, 10) : 0;
}

struct PartitionRecord {
  unsigned number;
  uint64_t start;  // bytes
  uint64_t size;   // bytes
};

struct Record {
  Status status;
  std::string backingFile;
  bool fromSysfs = false;  // the node could not be opened: status read from sysfs files
  std::vector<PartitionRecord> partitions;
};

// Status from sysfs files (`base` relative to `dir`), for a device we cannot open.
void StatusFromSysfs(int dir, const std::string& base, unsigned number, Status* status) {
  status->bound = true;
  status->number = number;
  std::string dev;
  if (ReadSmall(base + "/dev", &dev, dir) == 0) sscanf(dev.c_str(), "%u:%u", &status->major, &status->minor);
  status->offset = ReadNumber(base + "/loop/offset", dir);
  status->sizeLimit = ReadNumber(base + "/loop/sizelimit", dir);
  status->flags = (ReadNumber(base + "/ro", dir) ? LO_FLAGS_READ_ONLY : 0) |
                  (ReadNumber(base + "/loop/autoclear", dir) ? LO_FLAGS_AUTOCLEAR : 0) |
                  (ReadNumber(base + "/loop/partscan", dir) ? LO_FLAGS_PARTSCAN : 0) |
                  (ReadNumber(base + "/loop/dio", dir) ? LO_FLAGS_DIRECT_IO : 0);
  status->size = ReadNumber(base + "/size", dir) * 512;
  status->sectorSize = static_cast<uint32_t>(ReadNumber(base + "/queue/logical_block_size", dir));
  status->diskseq = ReadNumber(base + "/diskseq", dir);
}

// Partition numbers of loopN from the loopNpM entries of its sysfs directory.
std::vector<unsigned> PartitionsInSysfs(unsigned number) {
  std::vector<unsigned> found;
  const std::string name = "loop" + std::to_string(number);
  DIR* dir = opendir(("/sys/block/" + name).c_str());
  if (dir == nullptr) return found;
  while (struct dirent* entry = readdir(dir)) {
    unsigned device, partition;
    if (sscanf(entry->d_name, "loop%up%u", &device, &partition) == 2 && device == number) found.push_back(partition);
  }
  closedir(dir);
  return found;
}

// Every loop device is a virtual block device: its sysfs directory is here, and paths taken
// from an fd on this directory skip /sys/block's symlink and four lookups per file (kernfs
// path walks were a third of a 256-device list).
constexpr const char* kVirtualBlock = "/sys/devices/virtual/block";
constexpr const char* kClassBlock = "/sys/class/block";

// Reads device `number` (sysfs paths relative to `sysDir`); false when it is not bound.
bool ReadRecord(int sysDir, unsigned number, const std::vector<unsigned>& partitions, Record* record) {
  const std::string name = "loop" + std::to_string(number);
  // Unbound devices have no loop/ directory: skip them without opening anything.
  if (ReadSmall(name + "/loop/backing_file", &record->backingFile, sysDir) != 0) return false;

  const std::string path = "/dev/" + name;
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  bool described = false;
  if (fd >= 0) {
    const char* syscall = "";
    // The node must be this very device (a container's /dev may hold anything).
    if (CheckLoopDevice(fd, &record->status, static_cast<int>(number)) == 0) {
      described = ReadStatus(fd, &record->status, &syscall) == 0;
    }
    close(fd);
  }
  if (!described) {
    record->status = Status();
    StatusFromSysfs(sysDir, name, number, &record->status);
    record->fromSysfs = true;
  }
  if (!record->status.bound) return false;  // unbound between the two reads
  for (unsigned partition : partitions) {
    const std::string partBase = name + "/" + name + "p" + std::to_string(partition);
    record->partitions.push_back(
        {partition, ReadNumber(partBase + "/start", sysDir) * 512, ReadNumber(partBase + "/size", sysDir) * 512});
  }
  return true;
}

}  // namespace

struct ListOp : Step {
  int only;  // a device number, or -1 for all
  std::vector<Record> records;

  explicit ListOp(const Args& args) : only(args[Arg::list::only].IsUndefined() ? -1 : ArgInt(args, Arg::list::only, 0, 0xfffff)) {}

  bool Run() {
    // No loop device has been created yet (or no sysfs): nothing is bound.
    DIR* dir = opendir(kVirtualBlock);
    if (dir == nullptr) return errno == ENOENT ? true : failure.Fail(errno, "opendir", kVirtualBlock);
    const int sysDir = dirfd(dir);
    if (only >= 0) {
      // One device: its own sysfs directory is cheaper than listing every block device.
      const std::vector<unsigned> partitions = PartitionsInSysfs(static_cast<unsigned>(only));
      Record record;
      if (ReadRecord(sysDir, static_cast<unsigned>(only), partitions, &record)) records.push_back(record);
      closedir(dir);
      return true;
    }
    // /sys/class/block names every disk and every partition: one directory read gives the
    // loop devices and their partitions (/proc/partitions, which the kernel formats on each
    // read, cost three times more with 256 devices).
    DIR* names = opendir(kClassBlock);
    if (names == nullptr) {
      const int err = errno;
      closedir(dir);
      return err == ENOENT ? true : failure.Fail(err, "opendir", kClassBlock);
    }
    std::map<unsigned, std::vector<unsigned>> devices;  // number -> partitions, in order
    while (struct dirent* entry = readdir(names)) {
      unsigned number, partition;
      char tail;
      const int fields = sscanf(entry->d_name, "loop%up%u%c", &number, &partition, &tail);
      if (fields == 2) {
        devices[number].push_back(partition);
      } else if (fields == 1 && sscanf(entry->d_name, "loop%u%c", &number, &tail) == 1) {
        devices[number];
      }
    }
    closedir(names);
    for (auto& [number, partitions] : devices) {
      Record record;
      if (ReadRecord(sysDir, number, partitions, &record)) records.push_back(std::move(record));
    }
    closedir(dir);
    return true;
  }

  // [numbers, backingFiles, labels]: per device the ListSlot values, then three numbers per
  // partition (number, start, size); the strings in arrays. Building 256 objects property by
  // property through N-API cost more than reading the devices.
  Napi::Value Result(Napi::Env env) {
    constexpr size_t kListSlots = Count<ListSlot>();
    size_t count = records.size() * kListSlots;
    for (const Record& record : records) count += record.partitions.size() * 3;
    Napi::Float64Array numbers = Napi::Float64Array::New(env, count);
    Napi::Array files = Napi::Array::New(env, records.size());
    Napi::Array labels = Napi::Array::New(env, records.size());
    size_t at = 0;
    for (uint32_t i = 0; i < records.size(); i++) {
      const Record& record = records[i];
      const Status& status = record.status;
      using S = ListSlot;
      double* slots = numbers.Data() + at;
      slots[At(S::number)] = status.number;
      slots[At(S::major)] = status.major;
      slots[At(S::minor)] = status.minor;
      OutArray::SetU64(slots, At(S::backingDevice), status.backingDevice);
      OutArray::SetU64(slots, At(S::backingInode), status.backingInode);
      slots[At(S::offset)] = static_cast<double>(status.offset);
      slots[At(S::sizeLimit)] = static_cast<double>(status.sizeLimit);
      slots[At(S::flags)] = status.flags;
      slots[At(S::size)] = static_cast<double>(status.size);
      slots[At(S::sectorSize)] = status.sectorSize;
      OutArray::SetU64(slots, At(S::diskseq), status.diskseq);
      slots[At(S::fromSysfs)] = record.fromSysfs ? 1 : 0;
      slots[At(S::partitionCount)] = static_cast<double>(record.partitions.size());
      at += kListSlots;
      for (const PartitionRecord& part : record.partitions) {
        numbers[at++] = part.number;
        numbers[at++] = static_cast<double>(part.start);
        numbers[at++] = static_cast<double>(part.size);
      }
      files.Set(i, record.backingFile);
      labels.Set(i, status.label);
    }
    Napi::Array result = Napi::Array::New(env, 3);
    result.Set(0u, numbers);
    result.Set(1u, files);
    result.Set(2u, labels);
    return result;
  }
};

void InitList(Napi::Env env, Napi::Object exports) { Export<ListOp>(env, exports, "list"); }

}  // namespace loopdev
