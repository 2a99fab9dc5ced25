/*
 * C floors for listing bound loop devices, timing each full scan with CLOCK_MONOTONIC.
 *
 *   list --mode sysfs  for each /sys/block/loop*: read loop/backing_file (skip the device
 *                      when it is absent: unbound), then loop/{offset,sizelimit,autoclear,
 *                      partscan,dio}, {ro,size,dev}, queue/logical_block_size: ten files
 *   list --mode ioctl  for each /sys/block/loop* with loop/backing_file (read it): open
 *                      /dev/loopN O_RDONLY|O_CLOEXEC, LOOP_GET_STATUS64, BLKGETSIZE64,
 *                      BLKSSZGET, BLKROGET, close
 *   list --mode find --file PATH
 *                      read every loop/backing_file; for the devices backed by PATH do
 *                      the ioctls of --mode ioctl (the floor for find(file))
 *
 * Options: --iterations N, --warmup N. Prints
 *   {"mode":..., "devices":D, "timings_ns":[...]}   D = devices found in the last scan
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <linux/loop.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

struct device {
  char backing[4096];
  uint64_t offset, sizelimit, size_sectors, size_bytes, flags;
  int autoclear, partscan, dio, ro, logical_block_size, major, minor;
};

static int64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* Reads a small sysfs file into buf (NUL-terminated, newline stripped); -1 if absent. */
static int read_file(const char *dir, const char *name, char *buf, size_t size) {
  char path[512];
  snprintf(path, sizeof path, "%s/%s", dir, name);
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  ssize_t n = read(fd, buf, size - 1);
  close(fd);
  if (n < 0) return -1;
  while (n > 0 && buf[n - 1] == '\n') n--;
  buf[n] = 0;
  return (int)n;
}

static uint64_t read_u64(const char *dir, const char *name) {
  char buf[64];
  if (read_file(dir, name, buf, sizeof buf) < 0) return 0;
  return strtoull(buf, NULL, 10);
}

static void read_rest_sysfs(const char *dir, struct device *d) {
  char buf[64];
  d->offset = read_u64(dir, "loop/offset");
  d->sizelimit = read_u64(dir, "loop/sizelimit");
  d->autoclear = (int)read_u64(dir, "loop/autoclear");
  d->partscan = (int)read_u64(dir, "loop/partscan");
  d->dio = (int)read_u64(dir, "loop/dio");
  d->ro = (int)read_u64(dir, "ro");
  d->size_sectors = read_u64(dir, "size");
  d->logical_block_size = (int)read_u64(dir, "queue/logical_block_size");
  if (read_file(dir, "dev", buf, sizeof buf) >= 0) sscanf(buf, "%d:%d", &d->major, &d->minor);
}

static int read_ioctl(const char *name, struct device *d) {
  char path[300];
  snprintf(path, sizeof path, "/dev/%s", name);
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  struct loop_info64 info;
  int ok = ioctl(fd, LOOP_GET_STATUS64, &info) == 0;
  if (ok) {
    d->offset = info.lo_offset;
    d->sizelimit = info.lo_sizelimit;
    d->flags = info.lo_flags;
  }
  uint64_t bytes = 0;
  int ssz = 0, ro = 0;
  ok = ok && ioctl(fd, BLKGETSIZE64, &bytes) == 0;
  ok = ok && ioctl(fd, BLKSSZGET, &ssz) == 0;
  ok = ok && ioctl(fd, BLKROGET, &ro) == 0;
  close(fd);
  d->size_bytes = bytes;
  d->logical_block_size = ssz;
  d->ro = ro;
  return ok ? 0 : -1;
}

enum mode { SYSFS, IOCTL, FIND };

/* One full scan; returns how many bound devices (or matches, for FIND) it found. */
static int scan(enum mode mode, const char *file, struct device *out, int cap) {
  DIR *dir = opendir("/sys/block");
  if (!dir) return -1;
  int found = 0;
  struct dirent *entry;
  while ((entry = readdir(dir))) {
    if (strncmp(entry->d_name, "loop", 4) != 0) continue;
    char sys[300];
    snprintf(sys, sizeof sys, "/sys/block/%s", entry->d_name);
    struct device *d = &out[found < cap ? found : cap - 1];
    if (read_file(sys, "loop/backing_file", d->backing, sizeof d->backing) < 0) continue;
    if (mode == FIND) {
      if (strcmp(d->backing, file) != 0) continue;
      if (read_ioctl(entry->d_name, d) < 0) continue;
    } else if (mode == SYSFS) {
      read_rest_sysfs(sys, d);
    } else if (read_ioctl(entry->d_name, d) < 0) {
      continue; /* unbound between the sysfs read and the open */
    }
    found++;
  }
  closedir(dir);
  return found;
}

int main(int argc, char **argv) {
  enum mode mode = SYSFS;
  long iterations = 100, warmup = 0;
  const char *file = NULL;
  for (int i = 1; i < argc; i++) {
    int has_next = i + 1 < argc;
    if (strcmp(argv[i], "--mode") == 0 && has_next) {
      const char *m = argv[++i];
      if (strcmp(m, "sysfs") == 0) mode = SYSFS;
      else if (strcmp(m, "ioctl") == 0) mode = IOCTL;
      else if (strcmp(m, "find") == 0) mode = FIND;
      else goto usage;
    } else if (strcmp(argv[i], "--iterations") == 0 && has_next) {
      iterations = atol(argv[++i]);
    } else if (strcmp(argv[i], "--warmup") == 0 && has_next) {
      warmup = atol(argv[++i]);
    } else if (strcmp(argv[i], "--file") == 0 && has_next) {
      file = argv[++i];
    } else {
      goto usage;
    }
  }
  if ((mode == FIND) != (file != NULL) || iterations <= 0 || warmup < 0) goto usage;

  enum { CAP = 4096 };
  struct device *devices = calloc(CAP, sizeof *devices);
  int64_t *timings = calloc((size_t)iterations, sizeof *timings);
  if (!devices || !timings) return 1;
  int found = 0;
  for (long i = 0; i < warmup + iterations; i++) {
    int64_t t0 = now_ns();
    found = scan(mode, file, devices, CAP);
    int64_t t1 = now_ns();
    if (found < 0) {
      perror("list: /sys/block");
      return 1;
    }
    if (i >= warmup) timings[i - warmup] = t1 - t0;
  }
  static const char *names[] = {"sysfs", "ioctl", "find"};
  printf("{\"mode\":\"%s\",\"devices\":%d,\"timings_ns\":[", names[mode], found);
  for (long i = 0; i < iterations; i++) printf(i ? ",%lld" : "%lld", (long long)timings[i]);
  printf("]}\n");
  free(devices);
  free(timings);
  return 0;

usage:
  fprintf(stderr, "usage: list --mode sysfs|ioctl|find [--file PATH] [--iterations N] [--warmup N]\n");
  return 2;
}
