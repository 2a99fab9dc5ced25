#!/bin/busybox sh
# /init of the harness's initramfs. The Debian kernel has virtio, ext4 and 9p as modules, so
# this loads them (the list, in dependency order, is /modules/order), mounts the root disk
# and the run share (the harness's per-run directory on the host), and hands over to the
# init named by vm.init= on the kernel command line.
/bin/busybox --install -s /bin
export PATH=/bin

fail() {
  echo "initramfs: $*"
  echo o > /proc/sysrq-trigger
  sleep 30
}

mkdir -p /proc /sys /dev /newroot
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev

for module in $(cat /modules/order); do
  insmod "/modules/$module.ko" || echo "initramfs: insmod $module failed"
done

# virtio_blk probes asynchronously: wait for the disk node.
tries=0
while [ ! -b /dev/vda ]; do
  tries=$((tries + 1))
  [ $tries -gt 300 ] && fail "no /dev/vda after 30 s"
  sleep 0.1
done

mount -t ext4 /dev/vda /newroot || fail "cannot mount /dev/vda"
mkdir -p /newroot/loopdev-vm/run
mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 loopdevrun /newroot/loopdev-vm/run || fail "cannot mount the run share"

init=$(sed -n 's/.*vm\.init=\([^ ]*\).*/\1/p' /proc/cmdline)
[ -n "$init" ] || fail "no vm.init= on the kernel command line"

# debootstrap's first stage (a foreign root) leaves /proc as a symlink to /proc.
for dir in dev proc sys; do
  [ -L "/newroot/$dir" ] && rm "/newroot/$dir"
  mkdir -p "/newroot/$dir"
  mount --move "/$dir" "/newroot/$dir" || fail "cannot move /$dir into the root"
done
exec switch_root /newroot "$init"
