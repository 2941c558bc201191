#!/usr/bin/env bash
# The QEMU guest rig for the NVMe tests: QEMU, busybox, nvme-cli and the
# Debian 12 kernel (6.1, with nvme-tcp, vfio-pci and the emulated NVMe's
# driver as modules), extracted — not installed — under $FLINT_GUEST_DIR
# (default target/guest), its ELF vmlinux (boots faster under TCG), and an
# initramfs holding the modules, the host binaries the guest tests use
# (nvme, fio, mkfs.ext4, ...) and scripts/guest/{init,tests/*.sh}.
# Safe to run again; only missing parts are made.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
OUT=${FLINT_GUEST_DIR:-$ROOT/target/guest}
mkdir -p "$OUT"

need=()
command -v qemu-system-x86_64 >/dev/null || need+=(qemu-system-x86)
[ -x /bin/busybox ] && file -L /bin/busybox 2>/dev/null | grep -q static || need+=(busybox-static)
command -v cpio >/dev/null || need+=(cpio)
command -v depmod >/dev/null || need+=(kmod)
command -v mkfs.ext4 >/dev/null || need+=(e2fsprogs)
command -v nvme >/dev/null || need+=(nvme-cli)
command -v xz >/dev/null || need+=(xz-utils)
command -v fio >/dev/null || need+=(fio)
command -v file >/dev/null || need+=(file)
if [ ${#need[@]} -gt 0 ]; then
  echo "guest setup: installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# The kernel package, unpacked.
K=$OUT/kernel
if [ ! -d "$K/root/boot" ]; then
  mkdir -p "$K" && cd "$K"
  apt-get download linux-image-amd64 2>/dev/null
  IMG=$(dpkg -I linux-image-amd64_*.deb | sed -n 's/.*Depends: \(linux-image-[^ ,]*\).*/\1/p')
  apt-get download "$IMG" 2>/dev/null
  dpkg -x "$IMG"_*.deb root
  rm -f ./*.deb
  cd - >/dev/null
fi
KVER=$(ls "$K/root/lib/modules" | head -1)
# The ELF inside the compressed bzImage: find the xz stream and unpack it.
if [ ! -f "$K/vmlinux" ]; then
  Z=$(ls "$K"/root/boot/vmlinuz-* | head -1)
  at=$(grep -abo $'\xfd7zXZ\x00' "$Z" | head -1 | cut -d: -f1)
  tail -c +$((at + 1)) "$Z" | xz -dc 2>/dev/null > "$K/vmlinux" || true
  file "$K/vmlinux" | grep -q ELF || { echo "guest setup: no ELF kernel in $Z" >&2; exit 1; }
fi

# The initramfs.
ST=$(mktemp -d)
trap 'rm -rf "$ST"' EXIT
mkdir -p "$ST"/{bin,sbin,usr/bin,usr/sbin,proc,sys,dev,tmp,mnt,run,etc/nvme,root,lib64,lib/x86_64-linux-gnu,tests}
cp /bin/busybox "$ST/bin/"
for a in $("$ST/bin/busybox" --list); do [ -e "$ST/bin/$a" ] || ln -s busybox "$ST/bin/$a"; done
ln -sf ../bin/busybox "$ST/sbin/modprobe"
mods="nvme nvme-core nvme-fabrics nvme-tcp nvmet nvmet-tcp configfs vfio vfio-pci vfio_iommu_type1 virtio_net virtio_pci
      ext4 crc32c_intel crc32c_generic crc64_rocksoft_generic"
[ -f "$K/root/lib/modules/$KVER/modules.dep" ] || depmod -b "$K/root" "$KVER"
for m in $mods; do
  modprobe -d "$K/root" -S "$KVER" --show-depends "$m" 2>/dev/null | awk '$1=="insmod"{print $2}' || true
done | sort -u | while read -r f; do
  rel=${f#"$K/root"/}; mkdir -p "$ST/$(dirname "$rel")"; cp "$f" "$ST/$rel"
done
cp "$K/root/lib/modules/$KVER"/modules.{order,builtin,builtin.modinfo} "$ST/lib/modules/$KVER/"
depmod -b "$ST" "$KVER"
# Host binaries with the libraries they link.
for b in nvme fio mkfs.ext4 e2fsck blkdiscard cmp sha256sum; do
  p=$(command -v "$b" || true)
  [ -n "$p" ] || continue
  cp -L "$p" "$ST/usr/bin/"
  ldd "$p" 2>/dev/null | grep -oE '/[^ ]+\.so[^ ]*' | while read -r l; do
    mkdir -p "$ST/$(dirname "$l")"; cp -L "$l" "$ST/$l"
  done || true
done
# fio's ioengines load at run time.
for l in /usr/lib/x86_64-linux-gnu/fio; do [ -d "$l" ] && mkdir -p "$ST$l" && cp -a "$l/." "$ST$l/"; done
cp "$HERE/init" "$ST/init" && chmod +x "$ST/init"
cp "$HERE"/tests/*.sh "$ST/tests/"
for extra in ${FLINT_GUEST_BINS:-}; do cp -L "$extra" "$ST/usr/bin/"; done
(cd "$ST" && find . -print0 | cpio --null -o -H newc --quiet | gzip -1) > "$OUT/initrd.gz"
echo "guest: kernel $KVER, initramfs $(du -h "$OUT/initrd.gz" | cut -f1) in $OUT"
