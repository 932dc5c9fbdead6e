#!/usr/bin/env bash
# TCP throughput (iperf3) from a client to three backends through a router
# namespace, four ways: plain kernel forwarding (no XDP, no NAT), an
# nftables DNAT rule balancing by source address (jhash ip saddr mod 3,
# conntrack), and Lethe in dsr and nat mode (`lethe run`, sticky VIPs: the
# same balancing by source address). Prints a markdown table.
#
#   client ─ c0 ──── l0  lb  l1 ──── b0 ─ backends
#  10.0.0.2          router/LB         10.1.0.11-13 (one namespace,
#                                      three addresses, one iperf3 server;
#                                      the dsr VIP on lo)
#
# Every link: MTU 1500, tx checksum offload off and GRO on at both ends,
# as native XDP forwarding between veths needs (README, Modes); the same for
# every row, so rows differ only by what forwards. Each row: ROUNDS
# iperf3 runs of SECS seconds (+1 s omitted for slow start), median.
# Namespaces are named lethe-bench-<pid>-*, removed on exit whatever
# happens, with the processes this script started.
#
#   sudo scripts/bench_tcp.sh        (LETHE_BIN, default target/release/lethe;
#                                     BENCH_TCP_SECS=3, BENCH_TCP_ROUNDS=5)
set -euo pipefail

REPO="$(cd "$(dirname "$0")/.." && pwd)"
BIN="${LETHE_BIN:-$REPO/target/release/lethe}"
SECS="${BENCH_TCP_SECS:-3}"
ROUNDS="${BENCH_TCP_ROUNDS:-5}"
P="lethe-bench-$$"
NSS=(c lb b)
PIDS=()
TMP="$(mktemp -d)"

if [ "$(id -u)" -ne 0 ]; then
    echo "bench_tcp.sh: needs root (network namespaces, XDP); run with sudo" >&2
    exit 1
fi
for tool in iperf3 nft ethtool python3; do
    command -v "$tool" >/dev/null || { echo "bench_tcp.sh: $tool missing (scripts/setup.sh installs it)" >&2; exit 1; }
done
[ -x "$BIN" ] || { echo "bench_tcp.sh: no $BIN (cargo build --release)" >&2; exit 1; }

cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    local n
    # Anything still running in our namespaces is ours too.
    for n in "${NSS[@]}"; do
        for pid in $(ip netns pids "$P-$n" 2>/dev/null); do
            kill "$pid" 2>/dev/null || true
        done
    done
    for n in "${NSS[@]}"; do
        ip netns del "$P-$n" 2>/dev/null || true
    done
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# (Background processes are started with nsenter itself, which execs the
# command, so that $! is their PID: a function would add a subshell.)
in_ns() { local n="$P-$1"; shift; nsenter --net="/run/netns/$n" "$@"; }

for n in "${NSS[@]}"; do
    ip netns add "$P-$n"
    in_ns "$n" ip link set lo up
done

link() {
    local a="$1" ia="$2" b="$3" ib="$4"
    ip -n "$P-$a" link add "$ia" type veth peer name "$ib" netns "$P-$b"
    for end in "$a:$ia" "$b:$ib"; do
        local n="${end%%:*}" i="${end#*:}"
        ip -n "$P-$n" link set "$i" up
        in_ns "$n" ethtool -K "$i" tx off gro on >/dev/null
    done
}
link c c0 lb l0
link lb l1 b b0

in_ns c ip addr add 10.0.0.2/24 dev c0
in_ns c ip route add default via 10.0.0.1
in_ns lb ip addr add 10.0.0.1/24 dev l0
in_ns lb ip addr add 10.1.0.1/24 dev l1
in_ns lb sysctl -qw net.ipv4.conf.all.forwarding=1 net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0
for i in 11 12 13; do
    in_ns b ip addr add "10.1.0.$i/24" dev b0
done
in_ns b ip route add default via 10.1.0.1
# The dsr VIP lives on the backends' lo, and they must not answer ARP for it.
in_ns b ip addr add 10.100.0.1/32 dev lo
in_ns b sysctl -qw net.ipv4.conf.all.arp_ignore=1 net.ipv4.conf.all.arp_announce=2 \
    net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.b0.rp_filter=0
# Fixed MACs and permanent neighbours: nothing waits for ARP, and dsr's
# next hops are resolved from the first packet.
declare -A MAC=([c0]=02:00:00:00:00:02 [l0]=02:00:00:00:00:01 [l1]=02:00:00:00:01:01 [b0]=02:00:00:00:01:11)
for end in c:c0 lb:l0 lb:l1 b:b0; do
    in_ns "${end%%:*}" ip link set "${end#*:}" address "${MAC[${end#*:}]}"
done
in_ns c ip neigh replace 10.0.0.1 lladdr "${MAC[l0]}" dev c0 nud permanent
in_ns lb ip neigh replace 10.0.0.2 lladdr "${MAC[c0]}" dev l0 nud permanent
for i in 11 12 13; do
    in_ns lb ip neigh replace "10.1.0.$i" lladdr "${MAC[b0]}" dev l1 nud permanent
done
in_ns b ip neigh replace 10.1.0.1 lladdr "${MAC[l1]}" dev b0 nud permanent

nsenter --net="/run/netns/$P-b" iperf3 -s >"$TMP/iperf3-server.log" 2>&1 &
PIDS+=($!)

cat >"$TMP/lethe.json" <<'EOF'
{"vips": [
  {"name": "dsr", "address": "10.100.0.1", "port": 5201, "protocol": "tcp", "mode": "dsr", "sticky": true,
   "backends": [{"address": "10.1.0.11"}, {"address": "10.1.0.12"}, {"address": "10.1.0.13"}]},
  {"name": "nat", "address": "10.100.0.4", "port": 5201, "protocol": "tcp", "mode": "nat", "sticky": true,
   "backends": [{"address": "10.1.0.11"}, {"address": "10.1.0.12"}, {"address": "10.1.0.13"}]}
]}
EOF

NFT_RULES='table ip lethe_bench {
    chain prerouting {
        type nat hook prerouting priority dstnat; policy accept;
        ip daddr 10.100.0.5 tcp dport 5201 dnat to jhash ip saddr mod 3 map { 0 : 10.1.0.11, 1 : 10.1.0.12, 2 : 10.1.0.13 }
    }
}'

# Waits until something listens on port 5201 in the backends' namespace.
for _ in $(seq 50); do
    in_ns b ss -Hltn 'sport = :5201' | grep -q . && break
    sleep 0.1
done

# One iperf3 run: prints "Gbit/s retransmits".
iperf() {
    echo "bench_tcp.sh: iperf3 -c $*" >&2
    if ! in_ns c iperf3 -c "$1" -p 5201 -t "$SECS" -O 1 -J "${@:2}" >"$TMP/run.json" 2>&1 ||
        ! python3 -c '
import json, sys
e = json.load(open(sys.argv[1]))["end"]
print("%.2f %d" % (e["sum_received"]["bits_per_second"] / 1e9, e["sum_sent"].get("retransmits", 0)))
' "$TMP/run.json" 2>/dev/null; then
        echo "bench_tcp.sh: iperf3 to $1 failed:" >&2
        cat "$TMP/run.json" >&2
        exit 1
    fi
}

# Frames the LB's veths could not take from XDP (redirect or XDP_TX into a
# full 256-slot ring: XDP has no queue to wait in).
xdp_drops() {
    in_ns lb sh -c 'ethtool -S l0; ethtool -S l1' |
        awk '/(xdp_xmit_errors|xdp_tx_errors):/ {s += $2} END {print s + 0}'
}

declare -A GBPS RETR DROPS
row() { # name target [iperf3 args]
    local name="$1" out before
    before=$(xdp_drops)
    out="$(iperf "${@:2}")"
    GBPS[$name]+="${out% *} "
    RETR[$name]+="${out#* } "
    DROPS[$name]+="$(($(xdp_drops) - before)) "
}

lethe_start() {
    nsenter --net="/run/netns/$P-lb" "$BIN" run --iface l0 --iface l1 --config "$TMP/lethe.json" --stats-interval 0 \
        >"$TMP/lethe.log" 2>&1 &
    LETHE_PID=$!
    PIDS+=("$LETHE_PID")
    for _ in $(seq 100); do
        in_ns lb ip link show l1 | grep -q 'xdp' && return 0
        sleep 0.05
    done
    echo "bench_tcp.sh: lethe run did not attach:" >&2
    cat "$TMP/lethe.log" >&2
    exit 1
}

lethe_stop() {
    kill "$LETHE_PID"
    wait "$LETHE_PID" 2>/dev/null || true
}

started=$SECONDS
for _ in $(seq "$ROUNDS"); do
    row "plain kernel forwarding (client → backend address)" 10.1.0.11
    row "plain kernel forwarding, backend → client (-R)" 10.1.0.11 -R
    in_ns lb nft -f - <<<"$NFT_RULES"
    row "nftables DNAT, jhash of the source (conntrack)" 10.100.0.5
    row "nftables DNAT, backend → client (-R)" 10.100.0.5 -R
    in_ns lb nft delete table ip lethe_bench
    lethe_start
    row "Lethe dsr (replies routed by the kernel)" 10.100.0.1
    row "Lethe nat (both ways through XDP)" 10.100.0.4
    row "Lethe nat, backend → client (-R)" 10.100.0.4 -R
    lethe_stop
done

# TCP/UDP/IP checksum errors counted by the receivers: forwarding that
# breaks checksums shows here, not in the throughput.
csum_errors() {
    local n total=0
    for n in c b; do
        total=$((total + $(in_ns "$n" awk '/^(Ip|Tcp|Udp):/ && !h[$1]++ {for (i = 2; i <= NF; i++) col[$1, i] = $i; next}
            /^(Ip|Tcp|Udp):/ {for (i = 2; i <= NF; i++) if (col[$1, i] == "InCsumErrors") s += $i}
            END {print s + 0}' /proc/net/snmp)))
    done
    echo "$total"
}

median() { tr ' ' '\n' | grep . | sort -g | awk '{v[NR]=$1} END {print (NR%2) ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2}'; }

echo "iperf3, one TCP connection, ${SECS} s (+1 s omitted) per run, median of $ROUNDS runs per row, interleaved ($((SECONDS - started)) s in all); both cores shared by iperf3 client, server and forwarding."
echo
echo "| path | Gbit/s | runs (Gbit/s) | retransmits per run | veth XDP xmit errors (lb) per run |"
echo "|---|---|---|---|---|"
for name in "plain kernel forwarding (client → backend address)" \
    "nftables DNAT, jhash of the source (conntrack)" \
    "Lethe dsr (replies routed by the kernel)" \
    "Lethe nat (both ways through XDP)" \
    "plain kernel forwarding, backend → client (-R)" \
    "nftables DNAT, backend → client (-R)" \
    "Lethe nat, backend → client (-R)"; do
    printf '| %s | %s | %s | %s | %s |\n' "$name" "$(median <<<"${GBPS[$name]}")" \
        "$(echo ${GBPS[$name]} | sed 's/ /, /g')" "$(echo ${RETR[$name]} | sed 's/ /, /g')" \
        "$(echo ${DROPS[$name]} | sed 's/ /, /g')"
done
echo
echo "Checksum errors counted in the client and backend namespaces over all runs: $(csum_errors)."
