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

// Clears the device this attempt bound, however Run() leaves, unless it was kept: the one
// place that undoes a half-made attach (systemd's _cleanup_ variables, util-linux's single
// err: label). Armed only once the configure succeeded: a device whose configure failed with
// EBUSY is someone else's. Declared after the fds it goes through, so it runs before they close.
class Unbinder {
 public:
  Unbinder() = default;
  ~Unbinder() {
    if (fd_ != nullptr && fd_->get() >= 0) ioctl(fd_->get(), LOOP_CLR_FD, 0);
  }
  Unbinder(const Unbinder&) = delete;
  Unbinder& operator=(const Unbinder&) = delete;
  // Arms it, or moves it to another open fd of the same device.
  void Through(const Fd* fd) { fd_ = fd; }
  void Keep() { fd_ = nullptr; }

 private:
  const Fd* fd_ = nullptr;
};

// One attempt to bind a backing fd to a loop device, in stages: look at the backing file,
// pick a device (GET_FREE under the control lock, or the one asked for) and open and lock it,
// configure it, set PARTSCAN, read its status back, add the partitions, hand it over.
struct AttachOp : Step {
  int controlFd, requested, backingFd, blockSize;
  std::string backingPath;  // for messages only: the file is backingFd
  uint64_t offset, sizeLimit;
  uint32_t flags;
  std::string label;
  bool legacy, keepFd, lockControl, probeTable, directIOIfPossible, detachOnExit;
  std::vector<Partition> partitions;
  OutArray out;
  bool tableFound = false;

  int deviceFd = -1;
  Status status;
  std::vector<int> partitionErrors;  // per requested partition: 0, or the BLKPG errno

  // attach (its arguments: layout.h's LOOPDEV_ARGS_attach) fills out: LOOPDEV_ATTACH_SLOTS,
  // then one errno per partition. device -1: GET_FREE; controlFd -1: none (a named device
  // without the lock); label undefined: none.
  explicit AttachOp(const Args& args) : AttachOp(args, ArgInt(args, A::mode, 0, kAllModes)) {}

 private:
  using A = Arg::attach;
  static constexpr int kAllModes = AttachMode::kAll;
  static constexpr int kAllFlags = LO_FLAGS_READ_ONLY | LO_FLAGS_AUTOCLEAR | LO_FLAGS_PARTSCAN | LO_FLAGS_DIRECT_IO;

  AttachOp(const Args& args, int mode)
      : controlFd(ArgInt(args, A::controlFd, -1)),
        requested(ArgInt(args, A::device, -1, 0xfffff)),
        backingFd(ArgInt(args, A::backingFd, 0)),
        blockSize(ArgInt(args, A::sectorSize, 0, 65536)),
        backingPath(ArgString(args, A::backingPath)),
        offset(ArgU64(args, A::offset)),
        sizeLimit(ArgU64(args, A::sizeLimit)),
        flags(static_cast<uint32_t>(ArgInt(args, A::flags, 0, kAllFlags))),
        label(ArgOptionalString(args, A::label, LO_NAME_SIZE - 1)),
        legacy((mode & AttachMode::legacy) != 0),
        keepFd((mode & AttachMode::keepFd) != 0),
        lockControl((mode & AttachMode::lockControl) != 0),
        probeTable((mode & AttachMode::probeTable) != 0),
        directIOIfPossible((mode & AttachMode::directIOIfPossible) != 0),
        detachOnExit((mode & AttachMode::detachOnExit) != 0),
        partitions(ArgPartitions(args, A::partitions)),
        out(args, A::out, Count<AttachSlot>() + partitions.size()) {
    if ((flags & ~static_cast<uint32_t>(kAllFlags)) != 0) InvalidArg(args, A::flags, "a combination of LO_FLAGS_READ_ONLY, _AUTOCLEAR, _PARTSCAN and _DIRECT_IO");
    if (requested < 0 && controlFd < 0) InvalidArg(args, A::controlFd, "the control fd when no device is named");
  }

 public:
  bool Run() {
    bool mayHaveTable = false;
    if (!CheckBacking(&mayHaveTable)) return false;
    if (tableFound) return true;

    // Serialise with other cooperating tools (systemd takes the same lock) from GET_FREE to
    // the end of configure, so that they do not race us for the number.
    FlockGuard controlLock;
    if (lockControl && controlFd >= 0) {
      if (int err = controlLock.Lock(controlFd, LOCK_EX); err != 0) return failure.Fail(Stage::lockControl, err, "flock", "/dev/loop-control");
    }
    int number = requested;
    if (number < 0) {
      number = ioctl(controlFd, LOOP_CTL_GET_FREE);
      if (number < 0) return failure.Fail(Stage::getFree, errno, "ioctl(LOOP_CTL_GET_FREE)", "/dev/loop-control");
    }
    failure.device = number;
    const std::string path = DevicePath(number);
    const bool readOnly = (flags & LO_FLAGS_READ_ONLY) != 0;
    // A device opened read-only is bound read-only by the kernel, so open it read-write
    // unless read-only was asked for.
    Fd device(OpenLoop(path, readOnly ? O_RDONLY : O_RDWR, &status, &failure, number));
    if (device.get() < 0) return false;
    // udev does not probe a device while someone holds LOCK_EX on it, so it never sees a
    // half-configured device. Someone else holding it means it is in use: EWOULDBLOCK.
    // (close() drops the lock, so only a kept fd is unlocked explicitly.)
    if (flock(device.get(), LOCK_EX | LOCK_NB) != 0) return failure.Fail(Stage::lockDevice, errno, "flock", path);

    // With PARTSCAN, the device is configured without it and the flag set afterwards, once the
    // read-write fd is closed (see ScanPartitions): unless the file has no table, when there
    // is nothing to scan twice, and the second LOOP_SET_STATUS64 would only cost its queue
    // freeze (an RCU grace period: milliseconds, against microseconds for the whole attach).
    const bool partscan = (flags & LO_FLAGS_PARTSCAN) != 0 && (mayHaveTable || !probeTable);
    const uint32_t configureFlags = partscan ? flags & ~static_cast<uint32_t>(LO_FLAGS_PARTSCAN) : flags;
    Fd reader;
    Unbinder unbind;
    if (!(legacy ? ConfigureLegacy(device, &unbind, path, configureFlags) : Configure(device, &unbind, path, configureFlags))) return false;
    // A held writable device keeps its read-write fd: closing it would make udev re-read the
    // partition table (see ScanPartitions), and the caller's close or mount() does that later,
    // when a partition is open or mounted and the re-read is refused.
    const bool holdWriter = partscan && keepFd && !readOnly;
    if (partscan && !ScanPartitions(&device, &reader, &unbind, path, holdWriter)) return false;
    Fd& bound = reader.get() >= 0 ? reader : device;

    const char* syscall = "";
    const Detail detail = blockSize != 0 ? Detail::kFull : Detail::kBinding;
    if (int err = ReadStatus(bound.get(), &status, &syscall, detail); err != 0) return failure.Fail(Stage::readBack, err, syscall, path);
    if (!status.bound) {
      // Configured a moment ago and already unbound: another process cleared it, and may have
      // bound it again since. Not ours to clear.
      unbind.Keep();
      return failure.Fail(Stage::readBack, ENXIO, "ioctl(LOOP_GET_STATUS64)", path);
    }
    for (const Partition& partition : partitions) partitionErrors.push_back(Blkpg(bound.get(), BLKPG_ADD_PARTITION, partition));
    unbind.Keep();
    if (keepFd) deviceFd = HandOver(&bound, partscan, readOnly);
    return true;
  }

 private:
  // The backing file is one the kernel can bind, and the device will not be empty; with the
  // table probe, whether the device may show a partition table (*mayHaveTable: a block
  // device, left to the kernel), or, when a file's table is still to be read (the first
  // partscan attempt), tableFound and nothing more to do.
  bool CheckBacking(bool* mayHaveTable) {
    // The kernel answers a directory or a character device with a bare EINVAL; say what
    // is wrong before any device is touched.
    struct stat st;
    if (!CheckBackingType(backingFd, backingPath, &st, &failure)) return false;
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
    if (!probeTable) return true;
    if (!S_ISREG(st.st_mode)) {
      *mayHaveTable = true;
      return true;
    }
    unsigned char sector[512];
    const ssize_t length = pread(backingFd, sector, sizeof sector, static_cast<off_t>(offset));
    if (length < 0) return failure.Fail(Stage::backing, errno, "read", backingPath);
    tableFound = length == sizeof sector && sector[510] == 0x55 && sector[511] == 0xAA;
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
  bool ScanPartitions(Fd* device, Fd* reader, Unbinder* unbind, const std::string& path, bool keepWriter) {
    Fd* through = device;
    if (!keepWriter) {
      reader->reset(ReopenLoop(device->get(), status, O_RDONLY));
      if (reader->get() < 0) return failure.Fail(Stage::scanPartitions, errno, "open", path);
      flock(device->get(), LOCK_UN);
      // Blocking: udev holds its LOCK_SH only while it probes, for a moment.
      if (flock(reader->get(), LOCK_EX) != 0) return failure.Fail(Stage::scanPartitions, errno, "flock", path);
      unbind->Through(reader);
      through = reader;
    }
    struct loop_info64 info;
    memset(&info, 0, sizeof info);
    if (ioctl(through->get(), LOOP_GET_STATUS64, &info) != 0) return failure.Fail(Stage::scanPartitions, errno, "ioctl(LOOP_GET_STATUS64)", path);
    if (!keepWriter) device->reset();
    info.lo_flags |= LO_FLAGS_PARTSCAN;
    if (ioctl(through->get(), LOOP_SET_STATUS64, &info) != 0) return failure.Fail(Stage::scanPartitions, errno, "ioctl(LOOP_SET_STATUS64)", path);
    return true;
  }

  // The fd the caller holds from now on (AUTOCLEAR: its last close unbinds the device).
  int HandOver(Fd* bound, bool partscan, bool readOnly) {
    // With PARTSCAN the fd that set it is the one to hold; udev may probe from now on.
    // Otherwise the device is held through a read-only fd: kernels built with
    // BLK_DEV_WRITE_MOUNTED=n refuse to mount a device that is open for writing elsewhere. The
    // read-write fd closes only after the read-only one is open, so AUTOCLEAR never sees zero
    // openers.
    if (!partscan && !readOnly) {
      Fd held(ReopenLoop(bound->get(), status, O_RDONLY));
      if (held.get() >= 0) return held.release();
    }
    flock(bound->get(), LOCK_UN);
    return bound->release();
  }

  // lo_file_name: the caller's label (at most 63 bytes, checked when read), zero-padded.
  void CopyLabel(__u8* dest) const { memcpy(dest, label.data(), label.size()); }

  bool Configure(const Fd& device, Unbinder* unbind, const std::string& path, uint32_t configureFlags) {
    struct loop_config config;
    memset(&config, 0, sizeof config);
    config.fd = static_cast<uint32_t>(backingFd);
    config.block_size = static_cast<uint32_t>(blockSize);
    config.info.lo_offset = offset;
    config.info.lo_sizelimit = sizeLimit;
    config.info.lo_flags = configureFlags;
    CopyLabel(config.info.lo_file_name);
    // EBUSY: someone else bound it first. It is theirs: never clear it.
    if (ioctl(device.get(), LOOP_CONFIGURE, &config) != 0) return failure.Fail(Stage::configure, errno, "ioctl(LOOP_CONFIGURE)", path);
    unbind->Through(&device);
    return true;
  }

  // Kernels before 5.8: LOOP_SET_FD, then the settings one ioctl at a time. Once SET_FD has
  // succeeded the device is ours, so the Unbinder clears it if a setting fails.
  bool ConfigureLegacy(const Fd& device, Unbinder* unbind, const std::string& path, uint32_t configureFlags) {
    const int fd = device.get();
    if (ioctl(fd, LOOP_SET_FD, backingFd) != 0) return failure.Fail(Stage::configure, errno, "ioctl(LOOP_SET_FD)", path);
    unbind->Through(&device);
    struct loop_info64 info;
    memset(&info, 0, sizeof info);
    info.lo_offset = offset;
    info.lo_sizelimit = sizeLimit;
    info.lo_flags = configureFlags & LOOP_SET_STATUS_SETTABLE_FLAGS;
    CopyLabel(info.lo_file_name);
    if (ioctl(fd, LOOP_SET_STATUS64, &info) != 0) return failure.Fail(Stage::configureLegacy, errno, "ioctl(LOOP_SET_STATUS64)", path);
    if (blockSize != 0 && ioctl(fd, LOOP_SET_BLOCK_SIZE, static_cast<unsigned long>(blockSize)) != 0)
      return failure.Fail(Stage::configureLegacy, errno, "ioctl(LOOP_SET_BLOCK_SIZE)", path);
    if ((configureFlags & LO_FLAGS_DIRECT_IO) != 0 && ioctl(fd, LOOP_SET_DIRECT_IO, 1UL) != 0 && !directIOIfPossible)
      return failure.Fail(Stage::configureLegacy, errno, "ioctl(LOOP_SET_DIRECT_IO)", path);
    return true;
  }

 public:
  Napi::Value Result(Napi::Env env) {
    using S = AttachSlot;
    double* out = this->out.Slots();
    out[At(S::number)] = status.number;
    out[At(S::major)] = status.major;
    out[At(S::minor)] = status.minor;
    OutArray::SetU64(out, At(S::backingDevice), status.backingDevice);
    OutArray::SetU64(out, At(S::backingInode), status.backingInode);
    out[At(S::offset)] = static_cast<double>(status.offset);
    out[At(S::sizeLimit)] = static_cast<double>(status.sizeLimit);
    out[At(S::flags)] = status.flags;
    out[At(S::size)] = static_cast<double>(status.size);
    out[At(S::sectorSize)] = status.sectorSize;
    OutArray::SetU64(out, At(S::diskseq), status.diskseq);
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
  std::vector<Partition> partitions;
  OutArray out;
  Target target;  // last: it takes the held fd over once every other argument is read

  Status status;
  bool cleared = false;
  bool released = false;
  bool partscan = false;

  // detach (a target, then partitions and out: LOOPDEV_ARGS_detach) fills out:
  // LOOPDEV_DETACH_SLOTS. Without a path, /dev/loopN. A held fd is the step's from the call on
  // (see Target::kTake): closed by it, or given back when it fails before LOOP_CLR_FD.
  explicit DetachOp(const Args& args)
      : partitions(ArgPartitions(args, Arg::detach::partitions)),
        out(args, Arg::detach::out, Count<DetachSlot>()),
        target(args, TargetAt<Arg::detach>(), Target::kTake) {
    target.Take(args.Env());
  }

  bool Run() {
    Fd opened;
    const std::string& path = target.path;
    const int fd = target.Open(&opened, &status, &failure, Target::kMayBeUnbound);
    const uint32_t number = static_cast<uint32_t>(target.number);
    if (fd < 0) {
      // ENXIO from the open of a device that exists: the kernel is releasing it (Lo_rundown
      // refuses new openers), as another detach or a last close asked. Not bound, then: this
      // detach has nothing to clear, and says whether the release is over yet.
      if (failure.code != nullptr || failure.err != ENXIO || !SysfsDeviceExists(number)) return false;
      failure = Failure();
      released = SysfsReleased(number, true);
      return true;
    }
    // Partitions added with BLKPG outlive LOOP_CLR_FD on kernels without PARTSCAN cleanup.
    for (const Partition& partition : partitions) {
      int err = Blkpg(fd, BLKPG_DEL_PARTITION, partition);
      if (err != 0 && err != ENXIO) return failure.Fail(Stage::partitions, err, "ioctl(BLKPG_DEL_PARTITION)", path);
    }
    // Whether its release includes dropping partitions (known already when the binding was read).
    partscan = status.bound ? (status.flags & LO_FLAGS_PARTSCAN) != 0 : HasPartscan(fd);
    // The kernel drops a PARTSCAN device's partitions when it unbinds it, unless one is opened
    // in between (udev probes every partition that appears): then it leaves them all behind, on
    // an unbound device. udev starts no probe of a device someone holds LOCK_EX on, so, as
    // systemd's loop_device_unref() does, the device is locked first. If the lock is taken,
    // someone has the device open: the kernel unbinds it at their close, which cannot race.
    flock(fd, LOCK_EX | LOCK_NB);
    if (ioctl(fd, LOOP_CLR_FD, 0) == 0) {
      cleared = true;
    } else if (errno != ENXIO) {  // ENXIO: not bound (any more); nothing to do
      return failure.Fail(Stage::clear, errno, "ioctl(LOOP_CLR_FD)", path);
    }
    // Our fd counts as an opener: the kernel unbinds at the last close, so close first.
    target.held.reset();
    opened.reset();
    // sysfs says whether the release is over. Usually ours was the last close, and the release,
    // partitions included, was over before close() returned. When someone else has it open, the
    // kernel unbinds it at their close. So it does when LOOP_CLR_FD counted no opener but us while
    // an open was under way (udev's: lo_open has returned, the opener count not yet raised), and
    // their release may be half done as we look: sysfs's loop/ gone, the partitions not yet.
    released = SysfsReleased(number, partscan);
    return true;
  }

  void Persist(Napi::Env env) { out.Persist(env); }

  // Failed before LOOP_CLR_FD: the handle keeps its held fd (lib/ gives it back to the handle).
  void Unwind(Napi::Env env, bool alive) { target.GiveBack(env, alive); }

  // The device is unbound (or was not bound): nothing is left for detachOnExit to do.
  void Settle(Napi::Env env, bool) { ForgetAtExit(env, target.number); }

  Napi::Value Result(Napi::Env env) {
    using S = DetachSlot;
    double* out = this->out.Slots();
    out[At(S::cleared)] = cleared ? 1 : 0;
    out[At(S::released)] = released ? 1 : 0;
    OutArray::SetU64(out, At(S::diskseq), status.diskseq);
    out[At(S::partscan)] = partscan ? 1 : 0;
    return env.Undefined();
  }
};

void InitDevice(Napi::Env env, Napi::Object exports) {
  Export<AttachOp>(env, exports, "attach");
  Export<DetachOp>(env, exports, "detach");
}

}  // namespace loopdev
