// /dev/loopN: bind, inspect and unbind. Each Op is one attempt at one kernel transaction;
// retries, backoff and the choice of path live in lib/.
#include <fcntl.h>
#include <linux/blkpg.h>
#include <linux/fs.h>
#include <linux/loop.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <string>
#include <vector>

#include "addon.h"
#include "exit.h"
#include "op.h"
#include "layout.h"
#include "status.h"
#include "target.h"

#ifndef BLKGETDISKSEQ
#define BLKGETDISKSEQ _IOR(0x12, 128, __u64)
#endif

namespace loopdev {

namespace {

// Holds flock(LOCK_EX) on a descriptor for the guard's lifetime.
class FlockGuard {
 public:
  FlockGuard() = default;
  ~FlockGuard() {
    if (fd_ >= 0) flock(fd_, LOCK_UN);
  }
  FlockGuard(const FlockGuard&) = delete;
  FlockGuard& operator=(const FlockGuard&) = delete;
  int Lock(int fd, int how) {
    if (flock(fd, how) != 0) return errno;
    fd_ = fd;
    return 0;
  }

 private:
  int fd_ = -1;
};

}  // namespace

// One attempt to bind a backing fd to a loop device: take the control lock, pick a device
// (GET_FREE, or the one asked for), open and lock it, configure it, read its status back.
struct AttachOp : Step {
  int controlFd, requested, backingFd, blockSize;
  std::string backingPath;
  uint64_t offset, sizeLimit;
  uint32_t flags;
  std::string label;
  bool legacy, keepFd, lockControl, probeTable, noFollow, directIOIfPossible, detachOnExit;
  std::vector<Partition> partitions;
  bool tableFound = false;

  int deviceFd = -1;
  Status status;
  std::vector<int> partitionErrors;  // per requested partition: 0, or the BLKPG errno
  OutArray out;

  // attach(controlFd, device, backingFd, backingPath, offset, sizeLimit, flags, sectorSize,
  //        label, mode, partitions?, out): fills out (LOOPDEV_ATTACH_SLOTS, then one errno per
  //        partition). device -1: GET_FREE; backingFd -1: open backingPath; label '': the path.
  explicit AttachOp(const Args& args) : AttachOp(args, ArgInt(args, 9)) {}

 private:
  AttachOp(const Args& args, int mode)
      : controlFd(ArgInt(args, 0)),
        requested(ArgInt(args, 1)),
        backingFd(ArgInt(args, 2)),
        blockSize(ArgInt(args, 7)),
        backingPath(ArgString(args, 3)),
        offset(ArgU64(args, 4)),
        sizeLimit(ArgU64(args, 5)),
        flags(static_cast<uint32_t>(ArgInt(args, 6))),
        label(ArgOptionalString(args, 8)),
        legacy((mode & AttachMode::legacy) != 0),
        keepFd((mode & AttachMode::keepFd) != 0),
        lockControl((mode & AttachMode::lockControl) != 0),
        probeTable((mode & AttachMode::probeTable) != 0),
        noFollow((mode & AttachMode::noFollow) != 0),
        directIOIfPossible((mode & AttachMode::directIOIfPossible) != 0),
        detachOnExit((mode & AttachMode::detachOnExit) != 0),
        partitions(ArgPartitions(args, 10)),
        out(args, 11) {}

 public:
  bool Run() {
    const bool readOnly = (flags & LO_FLAGS_READ_ONLY) != 0;
    Fd opened;
    if (backingFd < 0) {
      // O_NONBLOCK so that a FIFO cannot hang a read-only open (it is refused just below);
      // the flag is cleared again before the kernel gets the file.
      opened.reset(OpenPath(backingPath, readOnly ? O_RDONLY | O_NONBLOCK : O_RDWR, noFollow));
      if (opened.get() < 0) return failure.Fail(errno, noFollow ? "openat2" : "open", backingPath);
      backingFd = opened.get();
      if (readOnly && fcntl(backingFd, F_SETFL, 0) != 0) return failure.Fail(errno, "fcntl", backingPath);
    }
    // The kernel answers a directory or a character device with a bare EINVAL; say what
    // is wrong before any device is touched.
    struct stat st;
    if (fstat(backingFd, &st) != 0) return failure.Fail(errno, "fstat", backingPath);
    if (!S_ISREG(st.st_mode) && !S_ISBLK(st.st_mode)) {
      return failure.Refuse("ERR_LOOP_INVALID_BACKING",
                            (backingPath.empty() ? std::string("the file") : backingPath) +
                                " is not a regular file or a block device",
                            backingPath);
    }
    // The kernel accepts an offset past the end and makes a 0-byte device: refuse instead.
    if (S_ISREG(st.st_mode) && offset > 0 && offset >= static_cast<uint64_t>(st.st_size)) {
      return failure.Refuse("ERR_LOOP_INVALID_OPTION",
                            "offset " + std::to_string(offset) + " is at or past the end of the file (" +
                                std::to_string(st.st_size) + " bytes)",
                            backingPath);
    }
    // partscan: a table is read in userspace and its partitions added with BLKPG (lib/). Every
    // MBR, and so every GPT's protective MBR, ends its first sector with 55 AA; without it
    // there is none to read. With it, stop here, before any device is touched: lib/ reads
    // the table and asks again with the partitions. (A block device is left to the kernel.)
    bool noTable = false;
    if (probeTable && S_ISREG(st.st_mode)) {
      unsigned char sector[512];
      const ssize_t length = pread(backingFd, sector, sizeof sector, static_cast<off_t>(offset));
      if (length < 0) return failure.Fail(errno, "read", backingPath);
      if (length == sizeof sector && sector[510] == 0x55 && sector[511] == 0xAA) {
        tableFound = true;
        return true;
      }
      noTable = true;
    }

    // Serialise with other cooperating tools (systemd takes the same lock) from GET_FREE to
    // the end of configure, so that they do not race us for the number.
    FlockGuard controlLock;
    if (lockControl && controlFd >= 0) {
      int err = controlLock.Lock(controlFd, LOCK_EX);
      if (err != 0) return failure.Fail(err, "flock", "/dev/loop-control");
    }
    int number = requested;
    if (number < 0) {
      number = ioctl(controlFd, LOOP_CTL_GET_FREE);
      if (number < 0) return failure.Fail(errno, "ioctl(LOOP_CTL_GET_FREE)", "/dev/loop-control");
    }
    failure.device = number;
    const std::string path = DevicePath(number);
    // A device opened read-only is bound read-only by the kernel, so open it read-write
    // unless read-only was asked for.
    Fd device(OpenLoop(path, readOnly ? O_RDONLY : O_RDWR, &status, &failure));
    if (device.get() < 0) return false;

    // udev does not probe a device while someone holds LOCK_EX on it, so it never sees a
    // half-configured device. Someone else holding it means it is in use: EWOULDBLOCK.
    // (close() drops the lock, so only a kept fd is unlocked explicitly.)
    if (flock(device.get(), LOCK_EX | LOCK_NB) != 0) return failure.Fail(errno, "flock", path);

    // With PARTSCAN, the device is configured without it and the flag set afterwards, once the
    // read-write fd is closed (see ScanPartitions): unless the file has no table, when there
    // is nothing to scan twice, and the second LOOP_SET_STATUS64 would only cost its queue
    // freeze (an RCU grace period: milliseconds, against microseconds for the whole attach).
    const bool partscan = (flags & LO_FLAGS_PARTSCAN) != 0 && !noTable;
    const uint32_t configureFlags = partscan ? flags & ~static_cast<uint32_t>(LO_FLAGS_PARTSCAN) : flags;
    if (!(legacy ? ConfigureLegacy(device.get(), path, configureFlags) : Configure(device.get(), path, configureFlags))) return false;
    // A held writable device keeps its read-write fd: closing it would make udev re-read the
    // partition table (see ScanPartitions), and the caller's close or mount() does that later,
    // when a partition is open or mounted and the re-read is refused.
    const bool holdWriter = partscan && keepFd && !readOnly;
    Fd reader;
    if (partscan && !ScanPartitions(&device, &reader, path, holdWriter)) return false;
    const int fd = reader.get() >= 0 ? reader.get() : device.get();

    const char* syscall = "";
    const Detail detail = blockSize != 0 ? Detail::kFull : Detail::kBinding;
    if (int err = ReadStatus(fd, &status, &syscall, detail); err != 0) {
      ioctl(fd, LOOP_CLR_FD, 0);  // ours, and unusable
      return failure.Fail(err, syscall, path);
    }
    if (!status.bound) {
      // Configured a moment ago and already unbound: another process cleared it.
      return failure.Fail(ENXIO, "ioctl(LOOP_GET_STATUS64)", path);
    }
    for (const Partition& partition : partitions) partitionErrors.push_back(Blkpg(fd, BLKPG_ADD_PARTITION, partition));
    if (!keepFd) return true;
    if (partscan) {
      // The fd that set PARTSCAN is the one to hold; udev may probe from now on.
      Fd* held = reader.get() >= 0 ? &reader : &device;
      flock(held->get(), LOCK_UN);
      deviceFd = held->release();
      return true;
    }
    // Hold the device through a read-only fd: kernels built with BLK_DEV_WRITE_MOUNTED=n
    // refuse to mount a device that is open for writing elsewhere. The read-write fd
    // closes only after the read-only one is open, so AUTOCLEAR never sees zero openers.
    Fd held(readOnly ? -1 : open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (held.get() >= 0) {
      deviceFd = held.release();
    } else {
      flock(device.get(), LOCK_UN);
      deviceFd = device.release();
    }
    return true;
  }

  // Partitions appear once, and stay. LOOP_CONFIGURE with PARTSCAN sends its change uevent
  // before it scans, and udev opening the device in between makes the kernel scan twice,
  // dropping and re-adding every partition (systemd PR #41425, blktests loop/012); and udev
  // re-reads the table (BLKRRPART) whenever a writer closes the device, unless someone holds
  // LOCK_EX on it. So: the lock moves to a read-only fd, the read-write one closes (udev finds
  // the lock and leaves the table alone), and PARTSCAN is set through the read-only fd, which
  // makes the kernel scan once. Closing a read-only fd gives udev no IN_CLOSE_WRITE.
  // With `keepWriter`, PARTSCAN is set through the read-write fd, which stays open.
  bool ScanPartitions(Fd* device, Fd* reader, const std::string& path, bool keepWriter) {
    const char* failed = nullptr;
    int err = 0;
    struct loop_info64 info;
    memset(&info, 0, sizeof info);
    if (keepWriter) {
      if (ioctl(device->get(), LOOP_GET_STATUS64, &info) == 0) {
        info.lo_flags |= LO_FLAGS_PARTSCAN;
        if (ioctl(device->get(), LOOP_SET_STATUS64, &info) == 0) return true;
        failed = "ioctl(LOOP_SET_STATUS64)";
      } else {
        failed = "ioctl(LOOP_GET_STATUS64)";
      }
      err = errno;
      ioctl(device->get(), LOOP_CLR_FD, 0);
      return failure.Fail(err, failed, path);
    }
    reader->reset(open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (reader->get() < 0) {
      failed = "open";
    } else {
      flock(device->get(), LOCK_UN);
      // Blocking: udev holds its LOCK_SH only while it probes, for a moment.
      if (flock(reader->get(), LOCK_EX) != 0) failed = "flock";
      else if (ioctl(reader->get(), LOOP_GET_STATUS64, &info) != 0) failed = "ioctl(LOOP_GET_STATUS64)";
    }
    if (failed == nullptr) {
      device->reset();
      info.lo_flags |= LO_FLAGS_PARTSCAN;
      if (ioctl(reader->get(), LOOP_SET_STATUS64, &info) == 0) return true;
      failed = "ioctl(LOOP_SET_STATUS64)";
    }
    err = errno;
    // Ours and half made: clear it (through whichever fd is open; the last close unbinds it).
    ioctl(reader->get() >= 0 ? reader->get() : device->get(), LOOP_CLR_FD, 0);
    return failure.Fail(err, failed, path);
  }

  // lo_file_name: the caller's label (at most 63 bytes, checked in lib/options.ts), else the
  // backing path, as losetup stores it, cut to 63 bytes but never inside a UTF-8 character
  // (the label is read back as a string). `dest` is zeroed.
  void CopyLabel(__u8* dest) const {
    const std::string& text = label.empty() ? backingPath : label;
    size_t length = std::min(text.size(), static_cast<size_t>(LO_NAME_SIZE - 1));
    if (length < text.size()) {
      while (length > 0 && (static_cast<unsigned char>(text[length]) & 0xC0) == 0x80) length--;
    }
    memcpy(dest, text.data(), length);
  }

  bool Configure(int fd, const std::string& path, uint32_t configureFlags) {
    struct loop_config config;
    memset(&config, 0, sizeof config);
    config.fd = static_cast<uint32_t>(backingFd);
    config.block_size = static_cast<uint32_t>(blockSize);
    config.info.lo_offset = offset;
    config.info.lo_sizelimit = sizeLimit;
    config.info.lo_flags = configureFlags;
    CopyLabel(config.info.lo_file_name);
    if (ioctl(fd, LOOP_CONFIGURE, &config) == 0) return true;
    // EBUSY: someone else bound it first. It is theirs: never clear it.
    return failure.Fail(errno, "ioctl(LOOP_CONFIGURE)", path);
  }

  // Kernels before 5.8: LOOP_SET_FD, then the settings one ioctl at a time. Once SET_FD has
  // succeeded the device is ours, so a later failure clears it before reporting.
  bool ConfigureLegacy(int fd, const std::string& path, uint32_t configureFlags) {
    if (ioctl(fd, LOOP_SET_FD, backingFd) != 0) return failure.Fail(errno, "ioctl(LOOP_SET_FD)", path);
    struct loop_info64 info;
    memset(&info, 0, sizeof info);
    info.lo_offset = offset;
    info.lo_sizelimit = sizeLimit;
    info.lo_flags = configureFlags & LOOP_SET_STATUS_SETTABLE_FLAGS;
    CopyLabel(info.lo_file_name);
    const char* failed = nullptr;
    if (ioctl(fd, LOOP_SET_STATUS64, &info) != 0)
      failed = "ioctl(LOOP_SET_STATUS64)";
    else if (blockSize != 0 && ioctl(fd, LOOP_SET_BLOCK_SIZE, static_cast<unsigned long>(blockSize)) != 0)
      failed = "ioctl(LOOP_SET_BLOCK_SIZE)";
    else if ((configureFlags & LO_FLAGS_DIRECT_IO) != 0 && ioctl(fd, LOOP_SET_DIRECT_IO, 1UL) != 0 && !directIOIfPossible)
      failed = "ioctl(LOOP_SET_DIRECT_IO)";
    if (failed == nullptr) return true;
    int err = errno;
    ioctl(fd, LOOP_CLR_FD, 0);
    return failure.Fail(err, failed, path);
  }

  Napi::Value Result(Napi::Env env) {
    using S = AttachSlot;
    double* out = this->out.Slots(Count<S>() + partitionErrors.size());
    if (out == nullptr) throw Napi::RangeError::New(env, "attach: the result array is too short");
    out[At(S::number)] = status.number;
    out[At(S::major)] = status.major;
    out[At(S::minor)] = status.minor;
    out[At(S::backingDevice)] = static_cast<double>(status.backingDevice);
    out[At(S::backingInode)] = static_cast<double>(status.backingInode);
    out[At(S::offset)] = static_cast<double>(status.offset);
    out[At(S::sizeLimit)] = static_cast<double>(status.sizeLimit);
    out[At(S::flags)] = status.flags;
    out[At(S::size)] = static_cast<double>(status.size);
    out[At(S::sectorSize)] = status.sectorSize;
    out[At(S::diskseq)] = static_cast<double>(status.diskseq);
    out[At(S::fd)] = deviceFd;
    out[At(S::legacy)] = legacy ? 1 : 0;
    out[At(S::table)] = tableFound ? 1 : 0;
    for (size_t i = 0; i < partitionErrors.size(); i++) out[Count<S>() + i] = partitionErrors[i];
    return env.Undefined();
  }

  void Persist(Napi::Env env) { out.Persist(env); }

  void Settle(Napi::Env env, bool delivered) {
    if (!delivered) return Abandon();
    if (deviceFd >= 0) AdoptFd(env, deviceFd);
    // Registered in the step that delivers the device: there is no moment at which the caller
    // has it and the thread's teardown (a Worker.terminate()) would not detach it.
    if (detachOnExit && !tableFound) DetachAtExit(env, Made());
  }

  // The binding this step made, with the partitions BLKPG added to it.
  Binding Made() const {
    Binding made{static_cast<int>(status.number), status.diskseq, status.backingDevice, status.backingInode, {}};
    for (size_t i = 0; i < partitionErrors.size(); i++) {
      if (partitionErrors[i] == 0) made.partitions.push_back(partitions[i]);
    }
    return made;
  }

  // The caller is gone (see Pending in op.h): the device is nobody's, so it is let go.
  void Abandon() {
    if (tableFound) return;  // nothing was attached
    if (deviceFd >= 0) {
      close(deviceFd);  // held with AUTOCLEAR: this last close unbinds it
      deviceFd = -1;
      return;
    }
    // Unbind it through a fresh fd, but only if it is still the binding this step made.
    UnbindIfSame(Made());
  }
};

// Unbinds a loop device: through a held fd, or by path. When the caller says what it
// attached (diskseq, backing device and inode), a device that has since been released and
// bound again by someone else is refused instead of cleared. After LOOP_CLR_FD the fd is
// closed (the kernel unbinds at the last close) and sysfs tells whether it really did.
struct DetachOp : Step {
  Target target;
  std::vector<Partition> partitions;
  OutArray out;

  Status status;
  bool cleared = false;
  bool released = false;
  bool partscan = false;
  bool closedHeld = false;

  // detach(number, path?, heldFd, checkIdentity, diskseq, backingDevice, backingInode,
  //        partitions?, out): fills out (LOOPDEV_DETACH_SLOTS). Without a path, /dev/loopN.
  explicit DetachOp(const Args& args) : target(args, 0), partitions(ArgPartitions(args, 7)), out(args, 8) {}

  bool Run() {
    Fd opened;
    const std::string& path = target.path;
    const int fd = target.Open(&opened, &status, &failure, Target::kMayBeUnbound);
    if (fd < 0) return false;
    // Partitions added with BLKPG outlive LOOP_CLR_FD on kernels without PARTSCAN cleanup.
    for (const Partition& partition : partitions) {
      int err = Blkpg(fd, BLKPG_DEL_PARTITION, partition);
      if (err != 0 && err != ENXIO) return failure.Fail(err, "ioctl(BLKPG_DEL_PARTITION)", path);
    }
    // The kernel drops a PARTSCAN device's partitions when it unbinds it, unless one is opened
    // in between (udev probes every partition that appears): then it leaves them all behind, on
    // an unbound device. udev starts no probe of a device someone holds LOCK_EX on, so, as
    // systemd's loop_device_unref() does, the device is locked first. If the lock is taken,
    // someone has the device open: the kernel unbinds it at their close, which cannot race.
    flock(fd, LOCK_EX | LOCK_NB);
    if (ioctl(fd, LOOP_CLR_FD, 0) == 0) {
      cleared = true;
    } else if (errno != ENXIO) {  // ENXIO: not bound (any more); nothing to do
      return failure.Fail(errno, "ioctl(LOOP_CLR_FD)", path);
    }
    const bool lastOpener = cleared && OnlyOpener(fd, &partscan);
    // Our fd counts as an opener: the kernel unbinds at the last close, so close first.
    if (target.heldFd >= 0) {
      close(target.heldFd);
      closedHeld = true;
    }
    opened.reset();
    // sysfs says whether the release is over. Even when LOOP_CLR_FD counted no opener but us,
    // an open that was under way then (udev's: lo_open has returned, the opener count not yet
    // raised) makes their close the last one, and the device stays bound until it. When ours
    // was the last, the release, partitions included, was over before close() returned.
    const uint32_t number = static_cast<uint32_t>(target.number);
    released = lastOpener ? !SysfsBound(number) : SysfsReleased(number, partscan);
    return true;
  }

  // Asked right after our LOOP_CLR_FD succeeded, on our fd: when the kernel counted no other
  // opener, it has already stopped calling the device bound (Lo_rundown since 5.18, which
  // also refuses new openers with ENXIO; unbound at once before that), so LOOP_GET_STATUS64
  // answers ENXIO, and our close is the last one unless an open was under way (see Run()).
  // When anyone else has it open, it stays bound with AUTOCLEAR set and the ioctl answers,
  // flags included: with PARTSCAN, the release that their close makes is over only when the
  // partitions are gone too.
  static bool OnlyOpener(int fd, bool* partscan) {
    struct loop_info64 info;
    if (ioctl(fd, LOOP_GET_STATUS64, &info) == 0) {
      *partscan = (info.lo_flags & LO_FLAGS_PARTSCAN) != 0;
      return false;
    }
    return errno == ENXIO;
  }

  void Persist(Napi::Env env) { out.Persist(env); }

  // The held fd was closed in Run(): forget it whether or not the caller hears of it. The
  // device is unbound (or was not bound): nothing is left for detachOnExit to do.
  void Settle(Napi::Env env, bool) {
    if (closedHeld) ReleaseFd(env, target.heldFd);
    ForgetAtExit(env, target.number);
  }

  Napi::Value Result(Napi::Env env) {
    using S = DetachSlot;
    double* out = this->out.Slots(Count<S>());
    if (out == nullptr) throw Napi::RangeError::New(env, "detach: the result array is too short");
    out[At(S::cleared)] = cleared ? 1 : 0;
    out[At(S::released)] = released ? 1 : 0;
    out[At(S::diskseq)] = static_cast<double>(status.diskseq);
    out[At(S::partscan)] = partscan ? 1 : 0;
    return env.Undefined();
  }
};

void InitDevice(Napi::Env env, Napi::Object exports) {
  Export<AttachOp>(env, exports, "attach");
  Export<DetachOp>(env, exports, "detach");
}

}  // namespace loopdev
