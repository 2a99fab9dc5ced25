#!/bin/bash
# PID 1 of a harness run. The initramfs has mounted the root disk (a snapshot: nothing written
# to it outlives the run) and this run's share at /loopdev-vm/run, where the harness left
# config.sh (shares, udev or not) and command.sh (COMMAND with its environment). This does the
# part of a distribution's early boot that the suite depends on, runs COMMAND with its output
# on the two virtio ports the harness reads, leaves its exit status in the share and powers off.
RUN=/loopdev-vm/run
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
exec </dev/null >/dev/console 2>&1

say() { echo "loopdev-vm: [$(cut -d' ' -f1 /proc/uptime)] $*"; }
poweroff() {
  sync
  echo o > /proc/sysrq-trigger
  sleep 30
}
fail() {
  say "$*"
  echo "$*" > "$RUN/error"
  poweroff
}

# shellcheck source=/dev/null
. "$RUN/config.sh" || fail "cannot read $RUN/config.sh"

# The API filesystems systemd mounts before anything else runs (the initramfs moved /dev,
# /proc and /sys here).
mount -t tmpfs -o mode=755,nosuid,nodev tmpfs /run
mkdir -p /dev/pts /dev/shm
mount -t devpts -o gid=5,mode=620,ptmxmode=000 devpts /dev/pts
mount -t tmpfs -o nosuid,nodev tmpfs /dev/shm
ln -sfn /proc/self/fd /dev/fd
ln -sf /proc/self/fd/0 /dev/stdin
ln -sf /proc/self/fd/1 /dev/stdout
ln -sf /proc/self/fd/2 /dev/stderr
hostname loopdev-vm

# The host's directories, each at the path COMMAND expects (MOUNTS: tag, path, options), then
# the guest-private directories over parts of them (TMPFS).
for ((i = 0; i < ${#MOUNTS[@]}; i += 3)); do
  mkdir -p "${MOUNTS[i + 1]}"
  mount -t 9p -o "trans=virtio,version=9p2000.L,msize=262144,${MOUNTS[i + 2]}" "${MOUNTS[i]}" "${MOUNTS[i + 1]}" ||
    fail "cannot mount share ${MOUNTS[i]} at ${MOUNTS[i + 1]}"
done
for dir in "${TMPFS[@]}"; do
  mkdir -p "$dir" && mount -t tmpfs tmpfs "$dir" || fail "cannot mount a tmpfs at $dir"
done

say "shares mounted"

# What the harness itself needs; udev would load these too, but not with --no-udev.
modprobe -a virtio_net virtio_console || fail "cannot load virtio_net and virtio_console"

# qemu's user network, static: the suite's package test runs `npm install`.
ip link set lo up
ip link set eth0 up && ip addr add 10.0.2.15/24 dev eth0 && ip route add default via 10.0.2.2 ||
  fail "cannot configure eth0"
say "network configured"

# Static device nodes of modules that are not loaded yet, as kmod-static-nodes.service and
# systemd-tmpfiles-setup-dev-early.service make them: /dev/loop-control among them, whose
# first open loads the loop module (nothing here runs `modprobe loop`).
mkdir -p /run/tmpfiles.d
kmod static-nodes --format=tmpfiles --output=/run/tmpfiles.d/static-nodes.conf
systemd-tmpfiles --prefix=/dev --create --boot
say "static device nodes made"

if [ "$UDEV" = 1 ]; then
  say "starting udevd"
  /lib/systemd/systemd-udevd --daemon
  udevadm trigger --type=subsystems --action=add
  udevadm trigger --type=devices --action=add
  udevadm settle --timeout=180 || say "udevadm settle timed out"
  say "udev settled"
fi

# The virtio-serial ports, by the names the harness gave them (udev would also link them
# under /dev/virtio-ports/, but it may not be running).
port() {
  local tries=0 dir
  while ((tries++ < 200)); do
    for dir in /sys/class/virtio-ports/*; do
      [ "$(cat "$dir/name" 2>/dev/null)" = "$1" ] && [ -c "/dev/${dir##*/}" ] && echo "/dev/${dir##*/}" && return
    done
    sleep 0.05
  done
  fail "no virtio port named $1"
}
stdout=$(port loopdev.stdout)
stderr=$(port loopdev.stderr)

[ -f "$RUN/npmrc" ] && cp "$RUN/npmrc" /root/.npmrc

say "COMMAND starts"
cut -d' ' -f1 /proc/uptime > "$RUN/started"
env -i /bin/bash "$RUN/command.sh" >"$stdout" 2>"$stderr"
status=$?
say "COMMAND exited with status $status"
echo "$status" > "$RUN/status"
poweroff
