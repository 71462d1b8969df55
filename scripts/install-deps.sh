#!/usr/bin/env bash
# Installs everything a fresh Debian 12 machine needs to build and test lisp-agent:
# Debian's Rust (for the eBPF build, which needs core's sources), LLVM 22 for bpf-linker,
# bpf-linker itself, and the tools the network tests use (iproute2, tshark).
# Idempotent: each step is skipped when its result is already there.
set -euo pipefail

need_apt=()
[ -x /usr/bin/rustc ] || need_apt+=(rustc-web)
[ -x /usr/bin/cargo ] || need_apt+=(cargo-web)
[ -d /usr/lib/rustlib/src/rust/library/core ] || need_apt+=(rust-web-src)
[ -d /usr/lib/llvm-22/lib ] && [ -e /usr/lib/llvm-22/lib/libLLVM.so ] || need_apt+=(llvm-22-dev)
command -v tshark >/dev/null || need_apt+=(tshark)
command -v ip >/dev/null || need_apt+=(iproute2)
command -v tcpdump >/dev/null || need_apt+=(tcpdump)
command -v ping >/dev/null || need_apt+=(iputils-ping)
command -v ethtool >/dev/null || need_apt+=(ethtool)
command -v nsenter >/dev/null || need_apt+=(util-linux)
[ -e /usr/include/zlib.h ] || need_apt+=(zlib1g-dev)
[ -e /usr/include/zstd.h ] || need_apt+=(libzstd-dev)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "install-deps: apt-get install ${need_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # tshark asks whether non-root users may capture; answer for it.
  echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need_apt[@]}"
fi

BPF_LINKER_VERSION=0.13.0
if ! command -v bpf-linker >/dev/null || ! bpf-linker --version 2>/dev/null | grep -q "$BPF_LINKER_VERSION"; then
  echo "install-deps: cargo install bpf-linker $BPF_LINKER_VERSION (LLVM 22)"
  LLVM_PREFIX=/usr/lib/llvm-22 cargo install --locked bpf-linker --version "$BPF_LINKER_VERSION" \
    --no-default-features --features llvm-22
fi

# The eBPF side and the tests need a bpffs for pinning; mount it if absent.
if ! mountpoint -q /sys/fs/bpf; then
  mount -t bpf bpf /sys/fs/bpf || echo "install-deps: could not mount bpffs (pinning unavailable)"
fi
echo "install-deps: ok"
