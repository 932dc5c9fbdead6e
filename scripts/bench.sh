#!/usr/bin/env bash
# Every benchmark, one markdown table (or two) per part with the command
# that produced it, written to bench/results.md. Needs root: the per-packet
# and throughput parts load XDP programs and make network namespaces.
#
#   1. per packet: BPF_PROG_TEST_RUN on the real program, every path, as a
#      ratio to an XDP_PASS floor measured in the same run (benches/packet.rs);
#   2. Maglev: build time, balance, disruption (benches/maglev.rs);
#   3. control plane: REST change → maps latency, bulk PUT, memory
#      (benches/control.rs, when it exists);
#   4. throughput: packets/s forwarded by one core through a veth, per mode,
#      next to the generator alone (benches/throughput.rs); TCP through
#      Lethe, plain kernel forwarding and nftables DNAT (scripts/bench_tcp.sh).
#
# Installs what is missing (scripts/setup.sh) and builds release first.
# Budget on a 2-core machine: about 6 minutes after the build (each part
# prints its time); the knobs are the benches' environment variables.
set -uo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
    echo "bench.sh: needs root — the per-packet and throughput benchmarks load XDP programs" >&2
    echo "and create network namespaces. Run: sudo scripts/bench.sh" >&2
    exit 1
fi

bash scripts/setup.sh || exit 1
. scripts/env.sh

OUT=bench/results.md
mkdir -p bench
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
BODY="$TMP/body.md"
: >"$BODY"
FAILED=()
TOTAL_START=$SECONDS
# What is measured: the tree as the run starts.
COMMIT="$(git rev-parse --short HEAD 2>/dev/null || echo '?')"
git diff --quiet HEAD 2>/dev/null || COMMIT="$COMMIT (with uncommitted changes)"
STARTED="$(date -u '+%Y-%m-%d %H:%M UTC')"

say() { printf '\n== %s\n' "$*" >&2; }

# part TITLE COMMAND...: runs COMMAND, shows and records its stdout (the
# tables) under TITLE with the command and its time; stderr goes to the
# terminal only.
part() {
    local title="$1" start=$SECONDS rc
    shift
    say "$title: $*"
    {
        printf '\n## %s\n\n`%s`\n\n' "$title" "$*"
    } >>"$BODY"
    "$@" | tee "$TMP/out"
    rc=${PIPESTATUS[0]}
    cat "$TMP/out" >>"$BODY"
    if [ "$rc" -ne 0 ]; then
        FAILED+=("$title")
        printf '\n**Failed (exit %s).**\n' "$rc" >>"$BODY"
    fi
    printf '\n(%s s)\n' "$((SECONDS - start))" | tee -a "$BODY" >&2
}

say "build (release)"
build_start=$SECONDS
cargo build --release --locked || exit 1
cargo bench --locked --no-run --bench packet --bench maglev --bench throughput || exit 1
BUILD_SECS=$((SECONDS - build_start))

part "1. Per packet (BPF_PROG_TEST_RUN, ratio to the XDP_PASS floor)" \
    cargo bench --locked --bench packet
part "2. Maglev (M × N, equal weights and 1–4)" \
    cargo bench --locked --bench maglev
if [ -f benches/control.rs ]; then
    part "3. Control plane (REST change → maps)" \
        cargo bench --locked --bench control
else
    printf '\n## 3. Control plane\n\nSkipped: benches/control.rs does not exist yet.\n' >>"$BODY"
    say "3. Control plane: skipped (no benches/control.rs)"
fi
part "4a. Throughput: packets/s forwarded by one core (live frames through a veth)" \
    cargo bench --locked --bench throughput
part "4b. Throughput: TCP (iperf3) through Lethe, kernel forwarding, nftables DNAT" \
    env LETHE_BIN=target/release/lethe scripts/bench_tcp.sh

{
    printf '# Lethe benchmarks\n\n'
    printf 'Produced by `sudo scripts/bench.sh`, started %s on commit %s; kernel %s, %s CPUs (%s).\n' \
        "$STARTED" "$COMMIT" "$(uname -r)" "$(nproc)" \
        "$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)"
    printf 'Build %s s, benchmarks %s s. Targets are SPEC.md'"'"'s (Performance).\n' \
        "$BUILD_SECS" "$((SECONDS - TOTAL_START - BUILD_SECS))"
    cat "$BODY"
} >"$OUT"

say "wrote $OUT ($((SECONDS - TOTAL_START)) s in all)"
if ((${#FAILED[@]})); then
    echo "bench.sh: failed: ${FAILED[*]}" >&2
    exit 1
fi
