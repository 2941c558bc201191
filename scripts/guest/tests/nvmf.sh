# In the guest: the Linux NVMe/TCP initiator against Flint's target on the
# host (10.0.2.2:$port): discovery, connect, fio verify (random 4 KiB and
# sequential 128 KiB, crc32c), header and data digests, discard reading
# back zeros, mkfs.ext4 and a remount, the target SIGKILLed and restarted
# by the host while the file system is mounted (the host reconnects, the
# data reads back), fsck, and no I/O error or timeout in dmesg.
# Prints PASS/FAIL lines; the host counts them.
arg() { for a in $(cat /proc/cmdline); do case $a in "$1"=*) echo "${a#*=}";; esac; done; }
P=$(arg port); NQN=$(arg nqn); H=10.0.2.2
up() { cut -d' ' -f1 /proc/uptime; }
check() { if [ "$1" = 0 ]; then echo "PASS $2"; else echo "FAIL $2"; fi; }
echo "$(arg hostnqn)" > /etc/nvme/hostnqn
echo "$(arg hostid)" > /etc/nvme/hostid
modprobe -a nvme-tcp ext4
dev=/dev/nvme0n1
wait_dev() { for i in $(seq 100); do [ -b $dev ] && return 0; sleep 0.1; done; return 1; }

nvme discover -t tcp -a $H -s "$P" > /tmp/disc 2>&1
grep -q "subnqn: *$NQN" /tmp/disc; check $? discover
cat /tmp/disc | grep -E "trsvcid|subnqn|traddr"

nvme connect -t tcp -a $H -s "$P" -n "$NQN" --reconnect-delay=1 --ctrl-loss-tmo=120 && wait_dev
check $? connect
nvme list
t0=$(up)
fio --name=rand --filename=$dev --direct=1 --ioengine=io_uring --rw=randwrite --bs=4k \
  --iodepth=16 --size=32M --verify=crc32c --do_verify=1 --verify_fatal=1 --randrepeat=0 \
  --output=/tmp/fio1 >/dev/null 2>&1
check $? fio-randwrite-verify-4k
fio --name=seq --filename=$dev --direct=1 --ioengine=io_uring --rw=write --bs=128k \
  --iodepth=8 --offset=64M --size=64M --verify=crc32c --do_verify=1 --verify_fatal=1 \
  --output=/tmp/fio2 >/dev/null 2>&1
check $? fio-seqwrite-verify-128k
echo "T: fio took $(awk "BEGIN{print $(up)-$t0}")s"
grep -E "IOPS|err=" /tmp/fio1 /tmp/fio2 | head -8
nvme disconnect -n "$NQN" >/dev/null

nvme connect -t tcp -a $H -s "$P" -n "$NQN" -g -G --reconnect-delay=1 --ctrl-loss-tmo=120 && wait_dev
check $? connect-with-digests
dd if=/dev/urandom of=$dev bs=1M count=1 oflag=direct 2>/dev/null
blkdiscard -o 0 -l 1048576 $dev && cmp -n 1048576 $dev /dev/zero
check $? discard-reads-zeros
t0=$(up)
mkfs.ext4 -q -F $dev; check $? mkfs.ext4
echo "T: mkfs took $(awk "BEGIN{print $(up)-$t0}")s"
mkdir -p /mnt/v
mount -t ext4 $dev /mnt/v && dd if=/dev/urandom of=/mnt/v/blob bs=1M count=16 2>/dev/null &&
  sha256sum /mnt/v/blob > /tmp/sum && umount /mnt/v && mount -t ext4 $dev /mnt/v && sha256sum -c /tmp/sum
check $? ext4-remount
sync
echo 3 > /proc/sys/vm/drop_caches
# No readahead: a readahead fails fast (by design) while the host
# reconnects; reads the file system needs wait for the reconnection.
blockdev --setra 0 $dev
# The host kills the target (SIGKILL) on seeing this line and restarts it.
echo "GUEST: RESTART-TARGET"
st=/sys/class/nvme/nvme0/state
for i in $(seq 200); do [ "$(cat $st)" != live ] && break; sleep 0.1; done
echo "T: controller state $(cat $st)"
# I/O during the outage waits for the reconnection.
sha256sum -c /tmp/sum > /tmp/after 2>&1; rc=$?
for i in $(seq 600); do [ "$(cat $st)" = live ] && break; sleep 0.1; done
echo "T: controller state $(cat $st) after $(awk "BEGIN{print $i/10}")s"
cat /tmp/after
check $rc reads-across-target-restart
dd if=/dev/urandom of=/mnt/v/after bs=1M count=4 conv=fsync 2>/dev/null && sha256sum /mnt/v/after > /tmp/sum2 &&
  umount /mnt/v && e2fsck -fn $dev >/tmp/fsck 2>&1
check $? writes-after-restart-and-fsck
tail -3 /tmp/fsck
mount -t ext4 $dev /mnt/v && sha256sum -c /tmp/sum2 >/dev/null && umount /mnt/v
check $? remount-after-restart
nvme disconnect -n "$NQN" >/dev/null
dmesg | grep -iE "nvme|blk_update|Buffer I/O" | tail -15
# Errors and timeouts. Not counted: while the host reconnects it fails
# readahead at once, itself (REQ_FAILFAST; "sct 0x3 / sc 0x70", host pathing
# error, logged as a "recoverable transport error"): those never reach a
# target, and what the file system needs waits for the reconnection.
dmesg | grep -iE "I/O error|blk_update_request|Buffer I/O error|timeout|transport error" \
  | grep -vE "sct 0x3 / sc 0x70|recoverable transport error, .*flags 0x8[0-9a-f]{4}" > /tmp/bad
echo "T: readahead failed fast during the reconnection: $(dmesg | grep -c 'sct 0x3 / sc 0x70')"
[ ! -s /tmp/bad ]; check $? dmesg-no-io-errors
cat /tmp/bad
