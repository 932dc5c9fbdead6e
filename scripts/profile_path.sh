#!/usr/bin/env bash
# Where one per-packet path's time goes, by source line of the XDP program:
# runs the packet bench on that path alone (pinned to CPU 1), samples CPU 1
# with perf's cpu-clock (works in VMs without hardware counters), and
# attributes the samples that fall in the JIT image to source lines through
# the program's jited line info. Kernel functions the program calls
# (bpf_xdp_adjust_head, ...) are listed by symbol after it.
#
#   sudo scripts/profile_path.sh "ipip IPv4-in-IPv4" [seconds, default 8]
#
# Samples land on the instruction after a stall (skid): read a hot line as
# "the chain of loads that ends here", not as its own cost.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" -eq 0 ] || { echo "profile_path.sh: needs root (loads XDP programs, perf on CPU 1)" >&2; exit 1; }
[ $# -ge 1 ] || { echo "usage: sudo scripts/profile_path.sh PATH-NAME [seconds]" >&2; exit 2; }
command -v perf >/dev/null || { echo "profile_path.sh: needs perf (apt-get install linux-perf)" >&2; exit 1; }
. scripts/env.sh
only="$1"; secs="${2:-8}"
bin=$(cargo bench --locked --bench packet --no-run 2>&1 | sed -n 's/.*Executable .*(\(.*\))$/\1/p' | tail -1)
[ -x "$bin" ] || { echo "profile_path.sh: could not build the packet bench" >&2; exit 1; }
tmp=$(mktemp -d)
LETHE_BENCH_ONLY="$only" LETHE_BENCH_CALLS=100000000 LETHE_BENCH_RUNS=1 "$bin" --bench >"$tmp/bench.out" 2>&1 &
bench=$!
trap 'kill "$bench" 2>/dev/null; wait "$bench" 2>/dev/null; rm -rf "$tmp"' EXIT
# The bench builds its topology first; wait for the program to be loaded.
for _ in $(seq 100); do
    bpftool -j prog show 2>/dev/null | grep -q '"name":"lethe_xdp"' && break
    kill -0 "$bench" 2>/dev/null || { cat "$tmp/bench.out" >&2; exit 1; }
    sleep 0.2
done
sleep 2
python3 scripts/jit_profile.py lines lethe_xdp "$tmp/lines"
perf record -q -e cpu-clock -c 25000 -C 1 -o "$tmp/perf.data" -- sleep "$secs" 2>/dev/null
perf script -i "$tmp/perf.data" -F ip 2>/dev/null >"$tmp/ips"
python3 scripts/jit_profile.py report "$tmp/lines" <"$tmp/ips"
echo
echo "kernel functions, by samples (the syscall's own work included):"
perf script -i "$tmp/perf.data" -F ip,sym 2>/dev/null | awk '{print $2}' | sort | uniq -c | sort -rn | grep -E 'bpf_xdp|bpf_fib|htab|thunk|bpf_redirect|bpf_prog_' | head -12
