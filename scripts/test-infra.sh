#!/usr/bin/env bash
# The real servers tests talk to, on 127.0.0.1 only. CI runs `install` before the tests; the
# tests start their own instances (fresh data folder, free port) through `s3`.
#
#   scripts/test-infra.sh install         install what is missing (s3s-fs: the S3 protocol,
#                                         SigV4 and create-if-absent, served from a folder)
#   scripts/test-infra.sh s3 DIR PORT     run s3s-fs on 127.0.0.1:PORT serving DIR (buckets are
#                                         DIR's subfolders), access key `sluice`, secret
#                                         `sluice-secret`; runs in the foreground
#   scripts/test-infra.sh s3-path         print the s3s-fs binary's path (installing it first)
set -euo pipefail

S3S_VERSION=0.14.1
bin_dir="${CARGO_HOME:-$HOME/.cargo}/bin"
s3s="$bin_dir/s3s-fs"

install_s3s() {
  if [ -x "$s3s" ]; then
    return 0
  fi
  echo "test-infra: installing s3s-fs $S3S_VERSION (about 1.5 minutes)" >&2
  # Its own target folder, so it neither shares nor disturbs the project's build.
  CARGO_TARGET_DIR="${TMPDIR:-/tmp}/sluice-s3s-build" RUSTFLAGS="" \
    cargo install s3s-fs@"$S3S_VERSION" --features binary --locked --quiet >&2
  rm -rf "${TMPDIR:-/tmp}/sluice-s3s-build"
}

case "${1:-}" in
  install) install_s3s ;;
  s3-path) install_s3s; echo "$s3s" ;;
  s3)
    install_s3s
    dir="$2"; port="$3"
    mkdir -p "$dir"
    exec "$s3s" --host 127.0.0.1 --port "$port" --access-key sluice --secret-key sluice-secret "$dir"
    ;;
  *) sed -n '2,12p' "$0" >&2; exit 2 ;;
esac
