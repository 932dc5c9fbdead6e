#!/usr/bin/env bash
# Regenerates vmlinux/vmlinux.h from the running kernel's BTF. The committed
# header comes from Linux 6.18; the program uses CO-RE-free UAPI types only
# (packet headers, bpf_fib_lookup), which are stable across kernels.
set -euo pipefail
cd "$(dirname "$0")/.."
bpftool btf dump file /sys/kernel/btf/vmlinux format c > vmlinux/vmlinux.h
echo "wrote vmlinux/vmlinux.h from $(uname -r)"
