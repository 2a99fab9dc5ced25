#!/bin/sh
# PID 1 of the one boot that finishes a foreign (arm64) root filesystem: debootstrap's second
# stage must run on the guest's own CPU. Its output goes to the console log; its exit status
# to the run share, where the harness reads it.
RUN=/loopdev-vm/run
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
exec >/dev/console 2>&1

mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /tmp
echo "second stage: started at uptime $(cut -d' ' -f1 /proc/uptime)"
/debootstrap/debootstrap --second-stage
status=$?
# rootfs.js told dpkg not to fsync (an emulated disk makes that slow); the image is built
# now, and dpkg in a run goes back to its default.
rm -f /etc/dpkg/dpkg.cfg.d/loopdev-vm-unsafe-io
if [ $status = 0 ]; then
  # The package files are installed; the image need not carry them.
  apt-get clean
  rm -rf /var/lib/apt/lists/*
fi
echo "second stage: exit $status at uptime $(cut -d' ' -f1 /proc/uptime)"
umount /tmp /run
echo $status > $RUN/status
sync
echo o > /proc/sysrq-trigger
sleep 30
