# In the guest: Flint's userspace NVMe driver (nvme_verify) over VFIO with
# the vIOMMU against QEMU's emulated NVMe: bring-up, random
# write/read/verify over >= 3 queue wraps, an injected read error
# (blkdebug) surfacing as a status, a reset mid-workload with every command
# completing; then 4 KiB random-read IOPS at QD1 and QD31 beside the guest
# kernel's nvme driver with fio on the same controller.
arg() { for a in $(cat /proc/cmdline); do case $a in "$1"=*) echo "${a#*=}";; esac; done; }
secs=$(arg secs); secs=${secs:-5}
echo 64 > /proc/sys/vm/nr_hugepages
BDF=; for d in /sys/bus/pci/devices/*; do [ "$(cat $d/class)" = 0x010802 ] && BDF=${d##*/}; done
echo "T: NVMe controller at $BDF, IOMMU group $(readlink /sys/bus/pci/devices/$BDF/iommu_group)"
modprobe -a vfio-pci vfio_iommu_type1
echo vfio-pci > /sys/bus/pci/devices/$BDF/driver_override
[ -e /sys/bus/pci/devices/$BDF/driver ] && echo $BDF > /sys/bus/pci/devices/$BDF/driver/unbind
echo $BDF > /sys/bus/pci/drivers_probe
echo "T: bound to $(basename "$(readlink /sys/bus/pci/devices/$BDF/driver)")"
nvme_verify $BDF --ops 3000 --eio-lba "$(arg eio_lba)" --bench "$secs"
echo "T: nvme_verify rc=$?"
# The kernel's driver on the same controller, same boot.
echo $BDF > /sys/bus/pci/devices/$BDF/driver/unbind
echo nvme > /sys/bus/pci/devices/$BDF/driver_override
modprobe nvme
echo $BDF > /sys/bus/pci/drivers_probe
for i in $(seq 100); do [ -b /dev/nvme0n1 ] && break; sleep 0.1; done
for qd in 1 31; do
  r=$(fio --name=k --filename=/dev/nvme0n1 --direct=1 --ioengine=io_uring --rw=randread --bs=4k \
    --iodepth=$qd --size=512M --time_based --runtime=$secs --output-format=terse 2>/dev/null | tail -1)
  echo "$r" | awk -F';' -v qd=$qd '{ printf "BENCH kernel randread-4k-qd%s %d\n", qd, $8 }'
done
