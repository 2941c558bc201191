#!/usr/bin/env bash
# Installs what Flint's build, tests and benchmarks need on Debian 12 and
# reserves hugepages where the machine allows. Safe to run again.
set -euo pipefail

need=()
command -v fio >/dev/null 2>&1 || need+=(fio)
command -v mount >/dev/null 2>&1 || need+=(mount)
command -v pkg-config >/dev/null 2>&1 || need+=(pkg-config)
command -v cc >/dev/null 2>&1 || need+=(gcc)
command -v nm >/dev/null 2>&1 || need+=(binutils)
dpkg -s dpkg-dev >/dev/null 2>&1 || need+=(dpkg-dev)
[ -e /usr/include/isa-l/erasure_code.h ] || need+=(libisal-dev)
# DPDK (the `dpdk` features): headers and libraries, libclang for bindgen,
# iproute2 for the network-namespace tests.
dpkg -s libdpdk-dev >/dev/null 2>&1 || need+=(libdpdk-dev)
dpkg -s libclang-dev >/dev/null 2>&1 || need+=(libclang-dev)
command -v ip >/dev/null 2>&1 || need+=(iproute2)
# The mount's peer suites (pjdfstest builds with autotools; prove runs it).
command -v autoreconf >/dev/null 2>&1 || need+=(autoconf)
command -v automake >/dev/null 2>&1 || need+=(automake)
command -v libtoolize >/dev/null 2>&1 || need+=(libtool)
command -v prove >/dev/null 2>&1 || need+=(perl)
command -v make >/dev/null 2>&1 || need+=(make)
# The cluster: etcd (its state), nftables (partitions in tests), curl.
command -v etcd >/dev/null 2>&1 || need+=(etcd-server)
command -v nft >/dev/null 2>&1 || need+=(nftables)
command -v curl >/dev/null 2>&1 || need+=(curl)
command -v setpriv >/dev/null 2>&1 || need+=(util-linux)

if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "setup: need ${need[*]}; run as root or install them with apt-get" >&2
    exit 1
  fi
  echo "setup: installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# Hugepages for DMA buffer pools: 512 x 2 MiB. Everything works without
# them (pools fall back to ordinary pages and say so).
want_huge=${FLINT_HUGEPAGES:-512}
if [ -w /proc/sys/vm/nr_hugepages ]; then
  have=$(cat /proc/sys/vm/nr_hugepages)
  if [ "$have" -lt "$want_huge" ]; then
    echo "$want_huge" > /proc/sys/vm/nr_hugepages 2>/dev/null || true
  fi
  echo "setup: hugepages reserved: $(cat /proc/sys/vm/nr_hugepages)"
else
  echo "setup: cannot reserve hugepages here; DMA pools use ordinary pages"
fi
