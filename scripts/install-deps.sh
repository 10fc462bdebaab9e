#!/usr/bin/env bash
# Installs the system packages the build uses, from Debian. Run by .ci/run; safe to re-run.
#   mold: a faster linker (optional; the build works without it).
#   libclang-dev, g++: RocksDB (the `rocksdb` crate) builds its bundled C++ with bindgen.
#   make: jemalloc (the binary's allocator) builds its bundled C with make.
set -uo pipefail
packages=(mold libclang-dev g++ make)
missing=()
for p in "${packages[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
  echo "install-deps: cannot install ${missing[*]} (not root or no apt-get); continuing without" >&2
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq && apt-get install -y -qq "${missing[@]}" >/dev/null \
  || echo "install-deps: apt-get could not install ${missing[*]}; continuing without" >&2
