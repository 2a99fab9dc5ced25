/*
 * C floor for the loopdev benchmarks: attach/detach a loop device with raw ioctls and
 * nothing else, timing each iteration with CLOCK_MONOTONIC.
 *
 * One attach is: open the backing file O_RDWR|O_CLOEXEC, open /dev/loop-control,
 * LOOP_CTL_GET_FREE, open /dev/loopN O_RDWR|O_CLOEXEC, LOOP_CONFIGURE, close everything
 * (with --hold: set LO_FLAGS_AUTOCLEAR and keep the device fd).
 * One detach is: open /dev/loopN, LOOP_CLR_FD, close (with --hold: close the kept fd,
 * the kernel unbinds at that last close).
 *
 * GET_FREE reserves nothing, so LOOP_CONFIGURE can fail with EBUSY when another process
 * bound the device first, and opening /dev/loopN can fail with ENXIO/ENOENT while a
 * device is being torn down or created: those ask GET_FREE again (no sleep: this is the
 * floor), at most MAX_RETRIES times.
 *
 * --same-steps: the kernel steps loopdev's sync attachSync()/detachSync() take, one for one
 * (native/device.cc AttachOp::Run and DetachOp::Run, lib/loop/attach.ts readPartitions), so that
 * the gap between this floor and loopdev is what loopdev spends outside the kernel:
 *   attach: [--partscan: open the backing file O_RDONLY|O_CLOEXEC, statx, pread its first
 *     512 bytes, close: loopdev reads the partition table itself; the bench image has none,
 *     so no BLKPG follows]; open backing O_RDWR|O_CLOEXEC; fstat(backing);
 *     flock(control, LOCK_EX); LOOP_CTL_GET_FREE; open /dev/loopN O_RDWR|O_CLOEXEC;
 *     fstat(dev) (S_ISBLK, major 7); flock(dev, LOCK_EX|LOCK_NB); LOOP_CONFIGURE (with
 *     lo_file_name = the image path, as loopdev labels it); LOOP_GET_STATUS64; BLKGETDISKSEQ;
 *     [--hold: open /dev/loopN O_RDONLY|O_CLOEXEC, the held fd]; close(dev);
 *     flock(control, LOCK_UN); close(backing).
 *   detach: open /dev/loopN O_RDONLY|O_CLOEXEC; fstat; BLKGETDISKSEQ (the diskseq must be
 *     the one read at attach); flock(dev, LOCK_EX|LOCK_NB) (udev probes no locked device,
 *     so no partition is opened while LOOP_CLR_FD drops them); LOOP_CLR_FD;
 *     LOOP_GET_STATUS64 (ENXIO: no other opener); close;
 *     access("/sys/devices/virtual/block/loopN/loop", F_OK) ("released?").
 *     With --hold: close(held fd), then the same access() (device.closeSync() says whether
 *     the device was released).
 *   /dev/loop-control is opened once per process, as loopdev does. --no-control-lock leaves
 *   out the two flock calls on it (loopdev's lockControl: false). With the lock, the time
 *   spent inside those two calls is also reported per cycle ("control_lock_ns", four vDSO
 *   clock reads, ~0.1 µs, are the only addition to the steps): a direct measure of the
 *   lock's cost, which a difference of two rows' medians is too noisy to give.
 * --threaded: the --same-steps attach and detach, each run on a worker thread while the main
 * thread waits, as any design that keeps an event loop free must: the main thread posts a
 * job (mutex + pthread_cond_signal, like libuv's threadpool), the worker (blocked in
 * pthread_cond_wait) runs it and writes an eventfd, the main thread wakes from epoll_wait
 * (like libuv's loop) and reads it. One cycle = two such round trips (attach, then detach),
 * as loopdev's async attach() + detach().
 *
 * Modes (all print one JSON object on stdout):
 *   cycle IMAGE [--iterations N] [--warmup N] [--hold] [--partscan]
 *               [--offset BYTES] [--sizelimit BYTES]
 *               [--same-steps | --threaded] [--no-control-lock]
 *       {"timings_ns":[...], "retries":R, "retry_errnos":{...}}   one attach+detach per timing
 *       (--same-steps/--threaded add "not_released": detaches after which sysfs still showed
 *       the device bound; loopdev would then poll until it is gone; and, with the control
 *       lock, "control_lock_ns": per timing, the time inside flock on /dev/loop-control)
 *       --untimed: no clock reads and no timings printed ("timings_ns":[]), so that the
 *       user-space instructions of a run are the cycles' own (bench/instructions.js)
 *       --mark-every N (with --untimed): calls cycle_mark() before every Nth iteration and after
 *       the last, where callgrind --dump-before=cycle_mark cuts the run into counts of N cycles
 *   cycle IMAGE --batch N ...
 *       attach N devices one after another, then detach them; one timing per batch
 *   cycle IMAGE --procs K --duration-ms D
 *       K forked processes cycle for D ms; per-cycle timings, cycles, retries, failures
 *   cycle IMAGE --bind N
 *       attach N devices and leave them bound: {"devices":[...]}
 *   cycle --cleanup IMAGE...
 *       detach every loop device whose sysfs backing_file is one of IMAGE (only those)
 *
 * SIGINT/SIGTERM stop the loop between iterations; whatever this process attached is
 * detached before it exits (except in --bind mode, where binding is the point; the
 * harness cleans those up with --cleanup).
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <linux/loop.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef BLKGETDISKSEQ
#define BLKGETDISKSEQ _IOR(0x12, 128, __u64)
#endif
#define LOOP_MAJOR 7

#define MAX_RETRIES 64
#define MAX_SAMPLES_PER_PROC (4u * 1024u * 1024u)

struct options {
  const char *image;
  long iterations;
  long warmup;
  int hold;
  int partscan;
  uint64_t offset;
  uint64_t sizelimit;
  long batch;
  long procs;
  long duration_ms;
  long bind;
  int same_steps;
  int threaded;
  int no_control_lock;
  int untimed;
  long mark_every;
};

struct attached {
  int number;
  int held_fd; /* -1 unless --hold */
  uint64_t diskseq; /* --same-steps: read back at attach, checked at detach */
};

/* Why attach asked GET_FREE again: the race that was lost. */
struct retries {
  long total, ebusy, enxio, enoent, eagain;
};

static void count_retry(struct retries *r, int e) {
  r->total++;
  if (e == EBUSY) r->ebusy++;
  else if (e == ENXIO) r->enxio++;
  else if (e == ENOENT) r->enoent++;
  else if (e == EAGAIN) r->eagain++;
}

static void add_retries(struct retries *to, const struct retries *from) {
  to->total += from->total;
  to->ebusy += from->ebusy;
  to->enxio += from->enxio;
  to->enoent += from->enoent;
  to->eagain += from->eagain;
}

static void print_retries(const struct retries *r) {
  printf("\"retries\":%ld,\"retry_errnos\":{\"EBUSY\":%ld,\"ENXIO\":%ld,\"ENOENT\":%ld,\"EAGAIN\":%ld}",
         r->total, r->ebusy, r->enxio, r->enoent, r->eagain);
}

static volatile sig_atomic_t stop_requested;

static void on_signal(int sig) {
  (void)sig;
  stop_requested = 1;
}

static int64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void die_usage(void) {
  fprintf(stderr,
          "usage: cycle IMAGE [--iterations N] [--warmup N] [--hold] [--partscan]\n"
          "             [--offset BYTES] [--sizelimit BYTES] [--batch N]\n"
          "             [--procs K --duration-ms D] [--bind N]\n"
          "             [--same-steps | --threaded] [--no-control-lock] [--untimed [--mark-every N]]\n"
          "       cycle --cleanup IMAGE...\n");
  exit(2);
}

static long parse_long(const char *s) {
  char *end;
  errno = 0;
  long v = strtol(s, &end, 10);
  if (errno || *end || v < 0) die_usage();
  return v;
}

/* Returns the device number (>= 0) or -errno. *retries counts extra GET_FREE rounds. */
/* The LOOP_CONFIGURE argument both floors pass (loopdev's steps add the label). */
static struct loop_config make_config(const struct options *o, int backing) {
  struct loop_config config;
  memset(&config, 0, sizeof config);
  config.fd = (uint32_t)backing;
  config.info.lo_offset = o->offset;
  config.info.lo_sizelimit = o->sizelimit;
  config.info.lo_flags = (o->hold ? LO_FLAGS_AUTOCLEAR : 0) | (o->partscan ? LO_FLAGS_PARTSCAN : 0);
  return config;
}

static int attach(const struct options *o, struct retries *retries, struct attached *out) {
  int backing = open(o->image, O_RDWR | O_CLOEXEC);
  if (backing < 0) return -errno;
  int control = open("/dev/loop-control", O_RDWR | O_CLOEXEC);
  if (control < 0) {
    int e = errno;
    close(backing);
    return -e;
  }
  int result = -EBUSY;
  for (int attempt = 0; attempt <= MAX_RETRIES; attempt++) {
    if (attempt > 0) count_retry(retries, -result);
    int n = ioctl(control, LOOP_CTL_GET_FREE);
    if (n < 0) {
      result = -errno;
      break;
    }
    char path[32];
    snprintf(path, sizeof path, "/dev/loop%d", n);
    int dev = open(path, O_RDWR | O_CLOEXEC);
    if (dev < 0) {
      result = -errno;
      if (errno == ENXIO || errno == ENOENT) continue;
      break;
    }
    struct loop_config config = make_config(o, backing);
    if (ioctl(dev, LOOP_CONFIGURE, &config) < 0) {
      int e = errno;
      close(dev); /* never LOOP_CLR_FD here: on EBUSY the device is someone else's */
      result = -e;
      if (e == EBUSY || e == EAGAIN) continue;
      break;
    }
    out->number = n;
    if (o->hold) {
      out->held_fd = dev;
    } else {
      out->held_fd = -1;
      close(dev);
    }
    result = n;
    break;
  }
  close(control);
  close(backing);
  return result;
}

static int detach(const struct attached *a) {
  if (a->held_fd >= 0) return close(a->held_fd) < 0 ? -errno : 0;
  char path[32];
  snprintf(path, sizeof path, "/dev/loop%d", a->number);
  int dev = open(path, O_RDWR | O_CLOEXEC);
  if (dev < 0) return -errno;
  int rc = ioctl(dev, LOOP_CLR_FD) < 0 ? -errno : 0;
  close(dev);
  return rc;
}

static void print_timings(const int64_t *t, long n) {
  fputs("\"timings_ns\":[", stdout);
  for (long i = 0; i < n; i++) printf(i ? ",%lld" : "%lld", (long long)t[i]);
  fputc(']', stdout);
}

/* ,"name":[...] */
static void print_series(const char *name, const int64_t *t, long n) {
  printf(",\"%s\":[", name);
  for (long i = 0; i < n; i++) printf(i ? ",%lld" : "%lld", (long long)t[i]);
  fputc(']', stdout);
}

/* ------------------------------------------------------------ --same-steps */

static int control_fd = -1; /* opened once per process, as loopdev does */
static long not_released;   /* detaches after which sysfs still showed the device bound */
static int64_t lock_ns;     /* time inside flock(control) this cycle (LOCK_EX + LOCK_UN) */

static int open_control(void) {
  if (control_fd >= 0) return 0;
  control_fd = open("/dev/loop-control", O_RDWR | O_CLOEXEC);
  return control_fd < 0 ? -errno : 0;
}

/* loopdev's OpenLoop check: a block device with the loop major, before any ioctl. */
static int check_loop(int fd) {
  struct stat st;
  if (fstat(fd, &st) < 0) return -errno;
  if (!S_ISBLK(st.st_mode) || major(st.st_rdev) != LOOP_MAJOR) return -ENOTBLK;
  return 0;
}

/* partscan: loopdev's attach step looks for a table itself (native/device.cc AttachOp), in
 * the first sector of the backing fd it already has open; the bench image has no 55 AA
 * signature, so that is all (no table read, no BLKPG). */
static int probe_partition_table(const struct options *o, int backing) {
  unsigned char sector[512];
  return pread(backing, sector, sizeof sector, (off_t)o->offset) < 0 ? -errno : 0;
}

static int retryable(int e) { return e == EBUSY || e == EAGAIN || e == ENXIO || e == ENOENT; }

/* GET_FREE .. close(dev), under the control lock when it is taken. Returns n or -errno. */
static int attach_locked(const struct options *o, int backing, struct attached *out) {
  int n = ioctl(control_fd, LOOP_CTL_GET_FREE);
  if (n < 0) return -errno;
  char path[32];
  snprintf(path, sizeof path, "/dev/loop%d", n);
  int dev = open(path, O_RDWR | O_CLOEXEC);
  if (dev < 0) return -errno;
  int rc = check_loop(dev);
  if (rc < 0) goto done;
  if (flock(dev, LOCK_EX | LOCK_NB) < 0) { /* EWOULDBLOCK: someone is configuring it */
    rc = -errno;
    goto done;
  }
  struct loop_config config = make_config(o, backing);
  strncpy((char *)config.info.lo_file_name, o->image, LO_NAME_SIZE - 1);
  if (ioctl(dev, LOOP_CONFIGURE, &config) < 0) { /* EBUSY: someone else's, never clear it */
    rc = -errno;
    goto done;
  }
  struct loop_info64 info;
  if (ioctl(dev, LOOP_GET_STATUS64, &info) < 0) {
    rc = -errno; /* ENXIO: already cleared by someone else */
    if (rc != -ENXIO) ioctl(dev, LOOP_CLR_FD, 0);
    goto done;
  }
  if (ioctl(dev, BLKGETDISKSEQ, &out->diskseq) < 0) out->diskseq = 0;
  out->number = n;
  out->held_fd = -1;
  if (o->hold) {
    /* the read-write fd closes only after the read-only one is open (AUTOCLEAR) */
    out->held_fd = open(path, O_RDONLY | O_CLOEXEC);
    if (out->held_fd < 0) {
      rc = -errno;
      ioctl(dev, LOOP_CLR_FD, 0);
      goto done;
    }
  }
  rc = n;
done:
  close(dev); /* drops the device's flock */
  return rc;
}

static int attach_same_steps(const struct options *o, struct retries *retries, struct attached *out) {
  int rc = open_control();
  if (rc < 0) return rc;
  int backing = open(o->image, O_RDWR | O_CLOEXEC);
  if (backing < 0) return -errno;
  struct stat st;
  if (fstat(backing, &st) < 0 || (o->partscan && (rc = probe_partition_table(o, backing)) < 0)) {
    rc = rc < 0 ? rc : -errno;
    close(backing);
    return rc;
  }
  int lock = !o->no_control_lock;
  rc = -EBUSY;
  for (int attempt = 0; attempt <= MAX_RETRIES; attempt++) {
    if (attempt > 0) count_retry(retries, -rc);
    int timed = lock && !o->untimed;
    int64_t t0 = timed ? now_ns() : 0;
    if (lock && flock(control_fd, LOCK_EX) < 0) {
      rc = -errno;
      break;
    }
    if (timed) lock_ns += now_ns() - t0;
    rc = attach_locked(o, backing, out);
    if (lock) {
      t0 = timed ? now_ns() : 0;
      flock(control_fd, LOCK_UN);
      if (timed) lock_ns += now_ns() - t0;
    }
    if (rc >= 0 || !retryable(-rc)) break;
  }
  close(backing);
  return rc;
}

static int detach_same_steps(const struct attached *a) {
  char path[64];
  if (a->held_fd >= 0) { /* device.closeSync(): close, then "released?" */
    if (close(a->held_fd) < 0) return -errno;
    snprintf(path, sizeof path, "/sys/devices/virtual/block/loop%d/loop", a->number);
    if (access(path, F_OK) == 0) not_released++;
    return 0;
  }
  snprintf(path, sizeof path, "/dev/loop%d", a->number);
  int dev = open(path, O_RDONLY | O_CLOEXEC);
  if (dev < 0) return -errno;
  int rc = check_loop(dev);
  if (rc < 0) goto done;
  struct loop_info64 info;
  uint64_t diskseq = 0;
  if (ioctl(dev, BLKGETDISKSEQ, &diskseq) < 0) diskseq = 0;
  if (diskseq == 0 || diskseq != a->diskseq) { /* loopdev asks the binding only then */
    if (ioctl(dev, LOOP_GET_STATUS64, &info) < 0) {
      rc = errno == ENXIO ? 0 : -errno; /* unbound: LOOP_CLR_FD says ENXIO, nothing to do */
    } else if (a->diskseq && diskseq) {
      rc = -ESTALE; /* ERR_LOOP_REUSED */
      goto done;
    }
  }
  flock(dev, LOCK_EX | LOCK_NB); /* taken or not, as loopdev: a holder has it open anyway */
  if (ioctl(dev, LOOP_CLR_FD, 0) < 0) {
    if (errno != ENXIO) rc = -errno;
  } else {
    /* loopdev reads the flags here (PARTSCAN) when the device is still bound (ENXIO: it is not) */
    ioctl(dev, LOOP_GET_STATUS64, &info);
  }
done:
  close(dev); /* the kernel unbinds at the last close */
  if (rc == 0) { /* loopdev asks sysfs either way: an open under way at LOOP_CLR_FD counts at close */
    snprintf(path, sizeof path, "/sys/devices/virtual/block/loop%d/loop", a->number);
    if (access(path, F_OK) == 0) not_released++;
  }
  return rc;
}

static int cycle_attach(const struct options *o, struct retries *retries, struct attached *out) {
  return o->same_steps ? attach_same_steps(o, retries, out) : attach(o, retries, out);
}

static int cycle_detach(const struct options *o, const struct attached *a) {
  return o->same_steps ? detach_same_steps(a) : detach(a);
}

/* ------------------------------------------------------------ --threaded */

enum job_kind { JOB_NONE, JOB_ATTACH, JOB_DETACH, JOB_QUIT };

/* One worker, one job at a time: what libuv's threadpool + uv_async_send do for one request. */
struct pool {
  pthread_mutex_t mutex;
  pthread_cond_t cond;
  enum job_kind kind; /* posted, not yet taken */
  int finished;       /* the worker is done with the last job */
  int result;
  const struct options *o;
  struct retries *retries;
  struct attached dev;
  int eventfd;
  int epoll;
};

static void *worker_main(void *arg) {
  struct pool *p = arg;
  for (;;) {
    pthread_mutex_lock(&p->mutex);
    while (p->kind == JOB_NONE) pthread_cond_wait(&p->cond, &p->mutex);
    enum job_kind kind = p->kind;
    p->kind = JOB_NONE;
    pthread_mutex_unlock(&p->mutex);
    if (kind == JOB_QUIT) return NULL;
    int result = kind == JOB_ATTACH ? attach_same_steps(p->o, p->retries, &p->dev) : detach_same_steps(&p->dev);
    pthread_mutex_lock(&p->mutex);
    p->result = result;
    p->finished = 1;
    pthread_mutex_unlock(&p->mutex);
    uint64_t one = 1;
    while (write(p->eventfd, &one, sizeof one) < 0 && errno == EINTR) {
    }
  }
}

static void post(struct pool *p, enum job_kind kind) {
  pthread_mutex_lock(&p->mutex);
  p->kind = kind;
  p->finished = 0;
  pthread_cond_signal(&p->cond);
  pthread_mutex_unlock(&p->mutex);
}

/* The main thread's loop: block in epoll_wait until the worker says it is done. A signal
 * does not abandon the job (what it attached must be detached): it only ends the run after. */
static int wait_done(struct pool *p) {
  for (;;) {
    struct epoll_event ev;
    int n = epoll_wait(p->epoll, &ev, 1, -1);
    if (n < 0 && errno != EINTR) return -errno;
    if (n <= 0) continue;
    uint64_t count;
    if (read(p->eventfd, &count, sizeof count) < 0 && errno != EAGAIN) return -errno;
    pthread_mutex_lock(&p->mutex);
    int finished = p->finished, result = p->result;
    pthread_mutex_unlock(&p->mutex);
    if (finished) return result;
  }
}

static int mode_threaded(const struct options *o) {
  int64_t *timings = calloc((size_t)(o->iterations ? o->iterations : 1), sizeof *timings);
  int64_t *lock_timings = calloc((size_t)(o->iterations ? o->iterations : 1), sizeof *lock_timings);
  if (!timings || !lock_timings) return 1;
  struct pool p;
  memset(&p, 0, sizeof p);
  pthread_mutex_init(&p.mutex, NULL);
  pthread_cond_init(&p.cond, NULL);
  p.o = o;
  p.eventfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  p.epoll = epoll_create1(EPOLL_CLOEXEC);
  struct epoll_event ev = {.events = EPOLLIN};
  if (p.eventfd < 0 || p.epoll < 0 || epoll_ctl(p.epoll, EPOLL_CTL_ADD, p.eventfd, &ev) < 0) {
    perror("cycle: eventfd/epoll");
    return 1;
  }
  /* the worker never takes SIGINT/SIGTERM: the main thread's loop does */
  sigset_t block, old;
  sigemptyset(&block);
  sigaddset(&block, SIGINT);
  sigaddset(&block, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &block, &old);
  pthread_t worker;
  int err = pthread_create(&worker, NULL, worker_main, &p);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  if (err) {
    fprintf(stderr, "cycle: pthread_create: %s\n", strerror(err));
    return 1;
  }
  struct retries retries = {0};
  long done = 0, unreleased_before = 0;
  int failed = 0;
  for (long i = 0; i < o->warmup + o->iterations && !stop_requested; i++) {
    struct retries warm_retries = {0};
    if (i == o->warmup) unreleased_before = not_released; /* worker idle here: no race */
    p.retries = i < o->warmup ? &warm_retries : &retries;
    lock_ns = 0; /* the worker adds to it; wait_done's mutex orders its writes before our read */
    int64_t t0 = now_ns();
    post(&p, JOB_ATTACH);
    int rc = wait_done(&p);
    if (rc >= 0) {
      post(&p, JOB_DETACH);
      rc = wait_done(&p);
    }
    int64_t t1 = now_ns();
    if (rc < 0) {
      fprintf(stderr, "cycle: iteration %ld: %s\n", i, strerror(-rc));
      failed = 1;
      break;
    }
    if (i >= o->warmup) {
      lock_timings[done] = lock_ns;
      timings[done++] = t1 - t0;
    }
  }
  post(&p, JOB_QUIT);
  pthread_join(worker, NULL);
  if (failed) return 1;
  fputc('{', stdout);
  print_timings(timings, done);
  fputc(',', stdout);
  print_retries(&retries);
  printf(",\"not_released\":%ld", not_released - unreleased_before);
  if (!o->no_control_lock) print_series("control_lock_ns", lock_timings, done);
  printf(",\"threaded\":true,\"interrupted\":%s}\n", stop_requested ? "true" : "false");
  return stop_requested ? 130 : 0;
}

/* A point in the run that callgrind can see (--dump-before=cycle_mark); does nothing. */
__attribute__((noinline)) void cycle_mark(void) { __asm__ volatile(""); }

static int mode_cycle(const struct options *o) {
  long batch = o->batch > 0 ? o->batch : 1;
  int64_t *timings = calloc((size_t)(o->iterations ? o->iterations : 1), sizeof *timings);
  int64_t *lock_timings = calloc((size_t)(o->iterations ? o->iterations : 1), sizeof *lock_timings);
  struct attached *devs = calloc((size_t)batch, sizeof *devs);
  if (!timings || !lock_timings || !devs) return 1;
  struct retries retries = {0};
  long done = 0, unreleased_before = 0;
  for (long i = 0; i < o->warmup + o->iterations && !stop_requested; i++) {
    struct retries warm_retries = {0};
    struct retries *r = i < o->warmup ? &warm_retries : &retries;
    if (i == o->warmup) unreleased_before = not_released;
    if (o->mark_every > 0 && i % o->mark_every == 0) cycle_mark();
    lock_ns = 0;
    int64_t t0 = o->untimed ? 0 : now_ns();
    long k = 0;
    int err = 0;
    for (; k < batch; k++) {
      int n = cycle_attach(o, r, &devs[k]);
      if (n < 0) {
        err = -n;
        break;
      }
    }
    for (long j = 0; j < k; j++) {
      int rc = cycle_detach(o, &devs[j]);
      if (rc < 0 && !err) err = -rc;
    }
    int64_t t1 = o->untimed ? 0 : now_ns();
    if (err) {
      fprintf(stderr, "cycle: iteration %ld: %s\n", i, strerror(err));
      return 1;
    }
    if (i >= o->warmup) {
      lock_timings[done] = lock_ns;
      timings[done++] = t1 - t0;
    }
  }
  if (o->mark_every > 0) cycle_mark();
  long printed = o->untimed ? 0 : done;
  fputc('{', stdout);
  print_timings(timings, printed);
  fputc(',', stdout);
  print_retries(&retries);
  if (o->same_steps) printf(",\"not_released\":%ld", not_released - unreleased_before);
  if (o->same_steps && !o->no_control_lock) print_series("control_lock_ns", lock_timings, printed);
  printf(",\"batch\":%ld,\"interrupted\":%s}\n", batch, stop_requested ? "true" : "false");
  return stop_requested ? 130 : 0;
}

struct proc_result {
  long cycles;
  struct retries retries;
  long failures;
  int last_errno;
  int64_t elapsed_ns;
  long samples;
};

static int mode_procs(const struct options *o) {
  long k = o->procs;
  size_t header = (((size_t)k * sizeof(struct proc_result)) + 63) & ~(size_t)63;
  size_t size = header + (size_t)k * MAX_SAMPLES_PER_PROC * sizeof(int64_t);
  /* MAP_NORESERVE + lazily touched pages: only the samples written cost memory */
  void *shared = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (shared == MAP_FAILED) {
    perror("cycle: mmap");
    return 1;
  }
  struct proc_result *results = shared;
  int64_t *samples = (int64_t *)((char *)shared + header);
  int barrier[2];
  if (pipe(barrier) < 0) {
    perror("cycle: pipe");
    return 1;
  }
  pid_t *pids = calloc((size_t)k, sizeof *pids);
  for (long p = 0; p < k; p++) {
    pid_t pid = fork();
    if (pid < 0) {
      perror("cycle: fork");
      stop_requested = 1;
      k = p;
      break;
    }
    if (pid == 0) {
      close(barrier[1]);
      char c;
      while (read(barrier[0], &c, 1) < 0 && errno == EINTR) {
      }
      struct proc_result *me = &results[p];
      int64_t *mine = samples + (size_t)p * MAX_SAMPLES_PER_PROC;
      int64_t start = now_ns(), end = start + (int64_t)o->duration_ms * 1000000LL, t1 = start;
      while (!stop_requested && t1 < end) {
        struct attached a;
        int64_t t0 = now_ns();
        int n = attach(o, &me->retries, &a);
        if (n < 0) {
          me->failures++;
          me->last_errno = -n;
          t1 = now_ns();
          continue;
        }
        int rc = detach(&a);
        t1 = now_ns();
        if (rc < 0) {
          me->failures++;
          me->last_errno = -rc;
        }
        me->cycles++;
        if (me->samples < (long)MAX_SAMPLES_PER_PROC) mine[me->samples++] = t1 - t0;
      }
      me->elapsed_ns = t1 - start;
      _exit(0);
    }
    pids[p] = pid;
  }
  close(barrier[0]);
  close(barrier[1]); /* releases every child at once */
  int failed_children = 0;
  for (long p = 0; p < k; p++) {
    int status;
    while (waitpid(pids[p], &status, 0) < 0 && errno == EINTR) {
    }
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) failed_children++;
  }
  long cycles = 0, failures = 0;
  struct retries retries = {0};
  int64_t max_elapsed = 0;
  for (long p = 0; p < k; p++) {
    cycles += results[p].cycles;
    add_retries(&retries, &results[p].retries);
    failures += results[p].failures;
    if (results[p].elapsed_ns > max_elapsed) max_elapsed = results[p].elapsed_ns;
  }
  printf("{\"procs\":%ld,\"duration_ms\":%ld,\"cycles\":%ld,", k, o->duration_ms, cycles);
  print_retries(&retries);
  printf(",\"failures\":%ld,\"failed_children\":%d,\"elapsed_ns\":%lld,\"per_proc\":[", failures, failed_children,
         (long long)max_elapsed);
  for (long p = 0; p < k; p++)
    printf("%s{\"cycles\":%ld,\"retries\":%ld,\"failures\":%ld,\"last_errno\":%d,\"elapsed_ns\":%lld}",
           p ? "," : "", results[p].cycles, results[p].retries.total, results[p].failures,
           results[p].last_errno, (long long)results[p].elapsed_ns);
  fputs("],\"timings_ns\":[", stdout);
  int first = 1;
  for (long p = 0; p < k; p++)
    for (long i = 0; i < results[p].samples; i++) {
      printf(first ? "%lld" : ",%lld", (long long)samples[(size_t)p * MAX_SAMPLES_PER_PROC + (size_t)i]);
      first = 0;
    }
  printf("],\"interrupted\":%s}\n", stop_requested ? "true" : "false");
  return stop_requested ? 130 : failed_children ? 1 : 0;
}

static int mode_bind(const struct options *o) {
  struct retries retries = {0};
  fputs("{\"devices\":[", stdout);
  int err = 0;
  for (long i = 0; i < o->bind && !stop_requested; i++) {
    struct attached a;
    int n = attach(o, &retries, &a);
    if (n < 0) {
      err = -n;
      break;
    }
    printf(i ? ",%d" : "%d", n);
  }
  fputs("],", stdout);
  print_retries(&retries);
  printf(",\"error\":\"%s\"}\n", err ? strerror(err) : "");
  return err ? 1 : stop_requested ? 130 : 0;
}

/* Strip the newline and the " (deleted)" suffix the kernel adds for unlinked files. */
static void normalise_backing(char *s) {
  size_t len = strlen(s);
  while (len && s[len - 1] == '\n') s[--len] = 0;
  const char *suffix = " (deleted)";
  size_t sl = strlen(suffix);
  if (len > sl && strcmp(s + len - sl, suffix) == 0) s[len - sl] = 0;
}

static int mode_cleanup(int argc, char **argv, int first) {
  DIR *dir = opendir("/sys/block");
  if (!dir) {
    perror("cycle: /sys/block");
    return 1;
  }
  int checked = 0, detached = 0, errors = 0;
  fputs("{\"detached\":[", stdout);
  struct dirent *entry;
  while ((entry = readdir(dir))) {
    if (strncmp(entry->d_name, "loop", 4) != 0) continue;
    char path[512], backing[4200];
    snprintf(path, sizeof path, "/sys/block/%s/loop/backing_file", entry->d_name);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) continue; /* unbound */
    ssize_t n = read(fd, backing, sizeof backing - 1);
    close(fd);
    if (n <= 0) continue;
    backing[n] = 0;
    normalise_backing(backing);
    checked++;
    int ours = 0;
    for (int i = first; i < argc; i++)
      if (strcmp(backing, argv[i]) == 0) ours = 1;
    if (!ours) continue;
    snprintf(path, sizeof path, "/dev/%s", entry->d_name);
    int dev = open(path, O_RDWR | O_CLOEXEC);
    if (dev < 0 || ioctl(dev, LOOP_CLR_FD) < 0) {
      fprintf(stderr, "cycle: cleanup %s: %s\n", path, strerror(errno));
      errors++;
    } else {
      printf(detached ? ",\"%s\"" : "\"%s\"", path);
      detached++;
    }
    if (dev >= 0) close(dev);
  }
  closedir(dir);
  printf("],\"bound_devices_checked\":%d,\"errors\":%d}\n", checked, errors);
  return errors ? 1 : 0;
}

int main(int argc, char **argv) {
  struct options o = {.iterations = 1000};
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_signal;
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    int has_next = i + 1 < argc;
    if (strcmp(a, "--cleanup") == 0) return mode_cleanup(argc, argv, i + 1);
    if (strcmp(a, "--hold") == 0) o.hold = 1;
    else if (strcmp(a, "--partscan") == 0) o.partscan = 1;
    else if (strcmp(a, "--same-steps") == 0) o.same_steps = 1;
    else if (strcmp(a, "--threaded") == 0) o.threaded = o.same_steps = 1;
    else if (strcmp(a, "--no-control-lock") == 0) o.no_control_lock = 1;
    else if (strcmp(a, "--untimed") == 0) o.untimed = 1;
    else if (strcmp(a, "--mark-every") == 0 && has_next) o.mark_every = parse_long(argv[++i]);
    else if (strcmp(a, "--iterations") == 0 && has_next) o.iterations = parse_long(argv[++i]);
    else if (strcmp(a, "--warmup") == 0 && has_next) o.warmup = parse_long(argv[++i]);
    else if (strcmp(a, "--offset") == 0 && has_next) o.offset = (uint64_t)parse_long(argv[++i]);
    else if (strcmp(a, "--sizelimit") == 0 && has_next) o.sizelimit = (uint64_t)parse_long(argv[++i]);
    else if (strcmp(a, "--batch") == 0 && has_next) o.batch = parse_long(argv[++i]);
    else if (strcmp(a, "--procs") == 0 && has_next) o.procs = parse_long(argv[++i]);
    else if (strcmp(a, "--duration-ms") == 0 && has_next) o.duration_ms = parse_long(argv[++i]);
    else if (strcmp(a, "--bind") == 0 && has_next) o.bind = parse_long(argv[++i]);
    else if (a[0] != '-' && !o.image) o.image = a;
    else die_usage();
  }
  if (!o.image) die_usage();
  /* the new floors are for the cycle mode only; the others keep the minimal floor */
  if ((o.same_steps || o.no_control_lock) && (o.bind > 0 || o.procs > 0)) die_usage();
  if (o.no_control_lock && !o.same_steps) die_usage();
  if (o.untimed && (o.threaded || o.bind > 0 || o.procs > 0)) die_usage();
  if (o.mark_every > 0 && !o.untimed) die_usage();
  if (o.threaded) {
    if (o.batch > 0) die_usage();
    return mode_threaded(&o);
  }
  if (o.bind > 0) return mode_bind(&o);
  if (o.procs > 0) {
    if (o.duration_ms <= 0) die_usage();
    return mode_procs(&o);
  }
  return mode_cycle(&o);
}
