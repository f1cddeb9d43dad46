#!/usr/bin/env bash
# Cross-builds the kernels' tests for aarch64-unknown-linux-gnu and runs them under user-mode QEMU
# (the NEON path and the portable one, against the same references and proptests as on x86-64),
# then checks that the whole workspace builds for AArch64 with and without OpenBLAS.
#
# Needs: Debian's qemu-user, gcc-aarch64-linux-gnu, libc6-dev-arm64-cross (installed here when
# missing and we are root) and the rustup target (added here). Exits non-zero if any of them cannot
# be had, or if any test fails. With --print-skip-reason it only says why it could not run.
set -euo pipefail
cd "$(dirname "$0")/.."
TARGET=aarch64-unknown-linux-gnu

missing=()
command -v qemu-aarch64 >/dev/null || missing+=(qemu-user)
command -v aarch64-linux-gnu-gcc >/dev/null || missing+=(gcc-aarch64-linux-gnu)
[ -e /usr/aarch64-linux-gnu/lib/libc.so.6 ] || missing+=(libc6-dev-arm64-cross)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "== installing ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    echo "test-aarch64: missing ${missing[*]} (install them, e.g. with sudo apt-get install)" >&2
    exit 1
  fi
fi

if ! rustup target list --installed | grep -qx "$TARGET"; then
  echo "== adding rustup target $TARGET"
  rustup target add "$TARGET"
fi

echo "== lints and build check, whole workspace, $TARGET (with and without OpenBLAS)"
cargo clippy --workspace --all-targets --target "$TARGET" -- -D warnings
cargo check --workspace --all-targets --target "$TARGET" --no-default-features

echo "== kernels tests under qemu-aarch64"
start=$(date +%s)
KERNELS_EMULATED=1 cargo test -p kernels --target "$TARGET"
echo "== emulated kernels tests took $(( $(date +%s) - start )) s"
