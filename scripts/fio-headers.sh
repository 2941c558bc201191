#!/usr/bin/env bash
# Fetches the source of the installed fio (Debian's) and configures it, so
# external engines can be built against its headers. Prints the source dir.
# Usage: scripts/fio-headers.sh [DEST]   (default: .fio-src)
set -euo pipefail
dest=${1:-.fio-src}
version=$(fio --version | sed 's/^fio-//')
src="$dest/fio-$version"
if [ -f "$src/config-host.h" ]; then
  echo "$src"
  exit 0
fi
mkdir -p "$dest"
if ! grep -rqs '^deb-src.*bookworm main' /etc/apt/sources.list /etc/apt/sources.list.d/; then
  mirror=$(sed -n 's/^URIs: *//p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -1)
  echo "deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] ${mirror:-http://deb.debian.org/debian} bookworm main" \
    > /etc/apt/sources.list.d/flint-fio-src.list
  apt-get update -qq >&2
fi
(cd "$dest" && apt-get source -qq fio >&2)
if [ ! -d "$src" ]; then
  echo "fio-headers: apt-get source fio did not give fio-$version (installed fio is $version)" >&2
  exit 1
fi
(cd "$src" && ./configure --disable-native >&2)
echo "$src"
