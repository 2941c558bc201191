# In the guest: Flint's NVMe/TCP target (flint serve on RAM devices, in
# this guest) beside the guest kernel's own nvmet-tcp target (a file on
# tmpfs), both over the guest's loopback, both driven by the kernel
# initiator and fio (io_uring, O_DIRECT) in the same boot. Prints
# "BENCH job target iops MiB/s" lines for scripts/bench-nvmf.sh.
secs=$(for a in $(cat /proc/cmdline); do case $a in secs=*) echo "${a#*=}";; esac; done)
secs=${secs:-8}
modprobe -a nvme-tcp nvmet nvmet-tcp configfs
mount -t configfs none /sys/kernel/config 2>/dev/null
echo nqn.2014-08.org.nvmexpress:uuid:0b1c2d3e-4f50-4a6b-8c7d-9e0f1a2b3c4d > /etc/nvme/hostnqn
echo 0b1c2d3e-4f50-4a6b-8c7d-9e0f1a2b3c4d > /etc/nvme/hostid
size=128
# The kernel's target.
truncate -s ${size}M /tmp/nvmet.img
N=/sys/kernel/config/nvmet
mkdir $N/subsystems/kernel && echo 1 > $N/subsystems/kernel/attr_allow_any_host
mkdir $N/subsystems/kernel/namespaces/1
echo -n /tmp/nvmet.img > $N/subsystems/kernel/namespaces/1/device_path
# tmpfs has no O_DIRECT: the file backend's page cache, as Flint's RAM.
echo 1 > $N/subsystems/kernel/namespaces/1/buffered_io
echo 1 > $N/subsystems/kernel/namespaces/1/enable
mkdir $N/ports/1
echo tcp > $N/ports/1/addr_trtype; echo ipv4 > $N/ports/1/addr_adrfam
echo 127.0.0.1 > $N/ports/1/addr_traddr; echo 4420 > $N/ports/1/addr_trsvcid
ln -s $N/subsystems/kernel $N/ports/1/subsystems/kernel
# Flint's.
cat > /tmp/flint.toml <<TOML
[reactor]
cores = []
poll_mode = "adaptive"
pin = false
[engine]
journal_blocks = 2048
checkpoint_blocks = 2048
[server]
data_addr = "127.0.0.1:7400"
mgmt_addr = "127.0.0.1:7480"
[[org]]
name = "default"
key_file = "/tmp/default.key"
[[filesystem]]
name = "default"
k = 2
m = 1
reduction = false
capacity = "1GiB"
org = "default"
[[device]]
name = "ram0"
backend = "memory"
size = "256MiB"
[[device]]
name = "ram1"
backend = "memory"
size = "256MiB"
[[device]]
name = "ram2"
backend = "memory"
size = "256MiB"
[nvmf]
listen = "127.0.0.1:4421"
[[nvmf.subsystem]]
nqn = "nqn.2026-12.io.flint:bench"
allow_any_host = true
[[nvmf.subsystem.namespace]]
filesystem = "default"
file = "bench0"
size = "${size}MiB"
TOML
flint --config /tmp/flint.toml serve --init > /tmp/flint.log 2>&1 &
for i in $(seq 300); do grep -q "NVMe/TCP target on" /tmp/flint.log && break; sleep 0.1; done
grep "NVMe/TCP target on" /tmp/flint.log || { echo "FAIL flint did not start"; cat /tmp/flint.log; exit 1; }
nvme connect -t tcp -a 127.0.0.1 -s 4420 -n kernel >/dev/null
for i in $(seq 100); do [ -b /dev/nvme0n1 ] && break; sleep 0.1; done
nvme connect -t tcp -a 127.0.0.1 -s 4421 -n nqn.2026-12.io.flint:bench >/dev/null
for i in $(seq 100); do [ -b /dev/nvme1n1 ] && break; sleep 0.1; done
nvme list
run() { # job target dev fio-args...
  job=$1 t=$2 dev=$3; shift 3
  r=$(fio --name=$job --filename=$dev --direct=1 --ioengine=io_uring --time_based --runtime=$secs \
    --ramp_time=1 --output-format=terse "$@" 2>/dev/null | tail -1)
  echo "$r" | awk -F';' -v j=$job -v t=$t '{ printf "BENCH %s %s %d %.1f\n", j, t, $8 + $49, ($7 + $48) / 1024 }'
}
for pair in "kernel /dev/nvme0n1" "flint /dev/nvme1n1"; do
  set -- $pair
  fio --name=fill --filename=$2 --direct=1 --ioengine=io_uring --rw=write --bs=1M --iodepth=4 \
    --size=${size}M >/dev/null 2>&1
done
for pair in "kernel /dev/nvme0n1" "flint /dev/nvme1n1"; do
  set -- $pair
  run randread-4k-qd1 $1 $2 --rw=randread --bs=4k --iodepth=1
  run randread-4k-qd32 $1 $2 --rw=randread --bs=4k --iodepth=32
  run seqread-128k $1 $2 --rw=read --bs=128k --iodepth=8
  run randwrite-4k-qd32 $1 $2 --rw=randwrite --bs=4k --iodepth=32
done
nvme disconnect-all >/dev/null
