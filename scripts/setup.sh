#!/usr/bin/env bash
# Installs what a fresh Debian bookworm needs to build and test Lethe.
# Idempotent: does nothing when everything is already present.
set -euo pipefail

PKGS=(clang-19 llvm-19 gcc libc6-dev libelf-dev zlib1g-dev pkg-config make ethtool bpftool iproute2 curl procps python3 iperf3 nftables)

missing=()
for p in "${PKGS[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
        missing+=("$p")
    fi
done

if ((${#missing[@]})); then
    echo "setup: installing ${missing[*]}"
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -q
    $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
else
    echo "setup: system packages present"
fi

# shellcheck source=scripts/env.sh
. "$(dirname "$0")/env.sh"
if ! command -v cargo >/dev/null 2>&1; then
    echo "setup: cargo not found; install Rust with rustup (https://rustup.rs)" >&2
    exit 1
fi

# bpffs is where the daemon pins its program and maps.
if ! mount | grep -q ' /sys/fs/bpf type bpf'; then
    mount -t bpf bpf /sys/fs/bpf 2>/dev/null || echo "setup: could not mount bpffs at /sys/fs/bpf (not root?)"
fi
