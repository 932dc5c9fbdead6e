#!/usr/bin/env bash
# The Lethe lab: real TCP through every mode, in network namespaces.
#
#   scripts/lab.sh up [--prefix P] [--ecmp] [--no-traffic] [--no-build]
#   scripts/lab.sh status [--prefix P]
#   scripts/lab.sh down [--prefix P]
#   scripts/lab.sh traffic [--prefix P]     (TRAFFIC_N=200 requests per VIP)
#   scripts/lab.sh start [lb|lb2] [--prefix P]  (start a daemon again)
#
#   client ──── router ──── lb  ──┐            (--ecmp: and lb2, the router
#  10.0.0.2    (multipath)   XDP   │ sw (bridge)  spreading flows over both)
#  fd00::2                 l-r l-b ├──── b1 10.1.0.11 fd00:1::11
#                                  ├──── b2 10.1.0.12 fd00:1::12
#                                  └──── b3 10.1.0.13 fd00:1::13
#
# Every name starts with the prefix (default lethe-lab), so the lab never
# collides with anything else on the machine, and tests run their own. `up`
# installs what is missing, builds, starts `lethe serve` in the lb
# namespace (pins in the machine's bpffs), configures a VIP per mode and
# family over the REST API with curl, and sends real requests. `down`
# removes everything it made, pins included.
set -euo pipefail

REPO="$(cd "$(dirname "$0")/.." && pwd)"
PREFIX=lethe-lab
ECMP=0
TRAFFIC=1
BUILD=1
LBS=()
CMD="${1:-}"
shift || true
while (($#)); do
    case "$1" in
    --prefix) PREFIX="$2"; shift ;;
    --ecmp) ECMP=1 ;;
    --no-traffic) TRAFFIC=0 ;;
    --no-build) BUILD=0 ;;
    lb | lb2) LBS+=("$1") ;;
    *) echo "lab.sh: unknown option $1" >&2; exit 2 ;;
    esac
    shift
done

STATE="/tmp/$PREFIX"
BIN="${LETHE_BIN:-$REPO/target/debug/lethe}"
PY="$(command -v python3 || echo /usr/bin/python3)"
API=http://127.0.0.1:9180
BACKENDS=(1 2 3)
FAILED=0 # requests `traffic` saw fail

ns() { echo "$PREFIX-$1"; }
in_ns() { local n; n="$(ns "$1")"; shift; nsenter --net="/run/netns/$n" "$@"; }
q() { "$@" >/dev/null 2>&1 || true; }
# A process is alive: it exists and is not a zombie (the lab's daemons and
# servers are orphans; whoever reaps orphans may take its time).
alive() {
    local state
    state=$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -c1)
    [ -n "$state" ] && [ "$state" != Z ] && [ "$state" != X ]
}
lbs() { if [ "$ECMP" = 1 ] || [ -e "/run/netns/$(ns lb2)" ]; then echo lb lb2; else echo lb; fi; }

sysctls() {
    in_ns "$1" sysctl -qw "${@:2}"
}

# A veth pair between two namespaces, both ends up, tx checksum offload off
# (native XDP redirect/TX loses "checksum not yet computed"), GRO on (so
# frames redirected into a veth are delivered), given MTU.
link() {
    local a="$1" ia="$2" b="$3" ib="$4" mtu="${5:-1500}"
    ip -n "$(ns "$a")" link add "$ia" mtu "$mtu" type veth peer name "$ib" netns "$(ns "$b")"
    ip -n "$(ns "$b")" link set "$ib" mtu "$mtu"
    for end in "$a:$ia" "$b:$ib"; do
        local n="${end%%:*}" i="${end#*:}"
        ip -n "$(ns "$n")" link set "$i" up
        in_ns "$n" ethtool -K "$i" tx off gro on >/dev/null 2>&1 || true
    done
}

topology() {
    for n in client router sw b1 b2 b3 lb $( [ "$ECMP" = 1 ] && echo lb2 ); do
        ip netns add "$(ns "$n")"
        ip -n "$(ns "$n")" link set lo up
    done
    # client
    link client c0 router r-c
    ip -n "$(ns client)" addr add 10.0.0.2/24 dev c0
    ip -n "$(ns client)" -6 addr add fd00::2/64 dev c0 nodad
    ip -n "$(ns client)" route add default via 10.0.0.1
    ip -n "$(ns client)" -6 route add default via fd00::1
    # router
    ip -n "$(ns router)" addr add 10.0.0.1/24 dev r-c
    ip -n "$(ns router)" -6 addr add fd00::1/64 dev r-c nodad
    sysctls router net.ipv4.conf.all.forwarding=1 net.ipv6.conf.all.forwarding=1 \
        net.ipv4.fib_multipath_hash_policy=1 net.ipv6.fib_multipath_hash_policy=1
    # the backend segment: a bridge
    ip -n "$(ns sw)" link add br0 mtu 1600 type bridge
    ip -n "$(ns sw)" link set br0 up
    local i=1
    for lb in $(lbs); do
        link router "r-$lb" "$lb" l-r
        ip -n "$(ns router)" addr add "10.0.1$((i - 1)).1/24" dev "r-$lb"
        ip -n "$(ns router)" -6 addr add "fd00:1$((i - 1))::1/64" dev "r-$lb" nodad
        ip -n "$(ns "$lb")" addr add "10.0.1$((i - 1)).2/24" dev l-r
        ip -n "$(ns "$lb")" -6 addr add "fd00:1$((i - 1))::2/64" dev l-r nodad
        ip -n "$(ns "$lb")" route add default via "10.0.1$((i - 1)).1"
        ip -n "$(ns "$lb")" -6 route add default via "fd00:1$((i - 1))::1"
        # What Lethe passes to the kernel for a VIP (fragments, pings, other
        # protocols) must end here, not go back to the router, which routes
        # the VIPs here: a loop until the TTL runs out (`lethe doctor`).
        ip -n "$(ns "$lb")" route add blackhole 10.100.0.0/24
        ip -n "$(ns "$lb")" -6 route add blackhole fd00:100::/64
        link "$lb" l-b sw "sw-$lb" 1600
        ip -n "$(ns sw)" link set "sw-$lb" master br0
        ip -n "$(ns "$lb")" addr add "10.1.0.$i/24" dev l-b
        ip -n "$(ns "$lb")" -6 addr add "fd00:1::$i/64" dev l-b nodad
        # The lb forwards what it does not balance (DSR replies); the VIPs
        # are not its own. Replies from VIP addresses come in from the
        # backend side: no reverse-path filter.
        sysctls "$lb" net.ipv4.conf.all.forwarding=1 net.ipv6.conf.all.forwarding=1 \
            net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0 \
            net.ipv4.conf.l-b.rp_filter=0 net.ipv4.conf.l-r.rp_filter=0
        i=$((i + 1))
    done
    if [ "$ECMP" = 1 ]; then
        ip -n "$(ns router)" route add 10.100.0.0/24 nexthop via 10.0.10.2 nexthop via 10.0.11.2
        ip -n "$(ns router)" -6 route add fd00:100::/64 nexthop via fd00:10::2 nexthop via fd00:11::2
    else
        ip -n "$(ns router)" route add 10.100.0.0/24 via 10.0.10.2
        ip -n "$(ns router)" -6 route add fd00:100::/64 via fd00:10::2
    fi
    ip -n "$(ns router)" route add 10.1.0.0/24 via 10.0.10.2
    ip -n "$(ns router)" -6 route add fd00:1::/64 via fd00:10::2
    # backends
    for b in "${BACKENDS[@]}"; do
        link "b$b" b-eth sw "sw-b$b" 1600
        ip -n "$(ns sw)" link set "sw-b$b" master br0
        ip -n "$(ns "b$b")" addr add "10.1.0.1$b/24" dev b-eth
        ip -n "$(ns "b$b")" -6 addr add "fd00:1::1$b/64" dev b-eth nodad
        ip -n "$(ns "b$b")" route add default via 10.1.0.1
        ip -n "$(ns "b$b")" -6 route add default via fd00:1::1
        # DSR: the VIPs on lo, never answered for in ARP / ND.
        for v in 1 2 3; do
            ip -n "$(ns "b$b")" addr add "10.100.0.$v/32" dev lo
            ip -n "$(ns "b$b")" -6 addr add "fd00:100::$v/128" dev lo
        done
        sysctls "b$b" net.ipv4.conf.all.arp_ignore=1 net.ipv4.conf.all.arp_announce=2 \
            net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0 \
            net.ipv4.conf.b-eth.rp_filter=0 net.ipv4.conf.lo.rp_filter=0
    done
}

start_backends() {
    for b in "${BACKENDS[@]}"; do
        # nsenter execs: $! is the server itself (a shell function would
        # put a subshell in between, and kill would miss the server).
        nsenter --net="/run/netns/$(ns "b$b")" "$PY" "$REPO/scripts/lab_http.py" --name "b$b" --port 80 --port 8080 --state "$STATE" \
            >"$STATE/b$b.log" 2>&1 &
        echo $! >"$STATE/b$b.pid"
        # Listening before the LB's health checks begin: a server still
        # starting would fail them and leave the tables at once.
        local listening=0
        for _ in $(seq 100); do
            if in_ns "b$b" curl -sf -m 2 -o /dev/null http://127.0.0.1:80/healthz &&
                in_ns "b$b" curl -sf -m 2 -o /dev/null http://127.0.0.1:8080/healthz; then
                listening=1
                break
            fi
            sleep 0.1
        done
        [ "$listening" = 1 ] || { cat "$STATE/b$b.log"; echo "lab.sh: b$b's HTTP server is not listening" >&2; exit 1; }
        # ipip and gue arrive encapsulated: Lethe's own decap on the backend.
        in_ns "b$b" "$BIN" decap attach b-eth --gue-port 6080 --instance "$PREFIX-b$b" >>"$STATE/b$b.log"
    done
}

# Starts `lethe serve` in each LB namespace given (default: all) and waits
# until it is ready. After a crash it finds its pins and saved config.
start_lbs() {
    local which="${*:-$(lbs)}"
    for lb in $which; do
        mkdir -p "$STATE/$lb"
        nsenter --net="/run/netns/$(ns "$lb")" "$BIN" serve --iface l-r --iface l-b --instance "$PREFIX-$lb" \
            --state-dir "$STATE/$lb" --listen 127.0.0.1:9180 >>"$STATE/$lb.log" 2>&1 &
        echo $! >"$STATE/$lb.pid"
    done
    for lb in $which; do
        for _ in $(seq 100); do
            in_ns "$lb" curl -sf -m 5 "$API/ready" >/dev/null 2>&1 && break
            sleep 0.1
        done
        in_ns "$lb" curl -sf -m 5 "$API/ready" >/dev/null || { cat "$STATE/$lb.log"; echo "lab.sh: $lb not ready" >&2; exit 1; }
        # Ready, and it is the daemon just started that answers.
        alive "$(cat "$STATE/$lb.pid")" || { cat "$STATE/$lb.log"; echo "lab.sh: $lb daemon exited" >&2; exit 1; }
    done
}

config() {
    local hc='"health_check": {"kind": "http", "path": "/healthz", "interval_ms": 500, "timeout_ms": 300, "rise": 2, "fall": 2}'
    local v4='[{"address": "10.1.0.11"}, {"address": "10.1.0.12"}, {"address": "10.1.0.13", "weight": 2}]'
    local v6='[{"address": "fd00:1::11"}, {"address": "fd00:1::12"}, {"address": "fd00:1::13", "weight": 2}]'
    local n4='[{"address": "10.1.0.11", "port": 8080}, {"address": "10.1.0.12", "port": 8080}, {"address": "10.1.0.13", "port": 8080, "weight": 2}]'
    local n6='[{"address": "fd00:1::11", "port": 8080}, {"address": "fd00:1::12", "port": 8080}, {"address": "fd00:1::13", "port": 8080, "weight": 2}]'
    vip() { echo "{\"name\": \"$1\", \"address\": \"$2\", \"port\": 80, \"protocol\": \"tcp\", \"mode\": \"$3\", $hc, \"backends\": $4}"; }
    cat <<EOF
{"hash_seed": 2026, "gue_port": 6080, "vips": [
  $(vip dsr4 10.100.0.1 dsr "$v4"), $(vip dsr6 fd00:100::1 dsr "$v6"),
  $(vip ipip4 10.100.0.2 ipip "$v4"), $(vip ipip6 fd00:100::2 ipip "$v6"),
  $(vip gue4 10.100.0.3 gue "$v4"), $(vip gue6 fd00:100::3 gue "$v6"),
  $(vip nat4 10.100.0.4 nat "$n4"), $(vip nat6 fd00:100::4 nat "$n6")
]}
EOF
}

configure() {
    config >"$STATE/config.json"
    for lb in $(lbs); do
        # As an operator would: curl, the REST API.
        in_ns "$lb" curl -sf -X PUT "$API/v1/config" -H 'Content-Type: application/json' \
            --data-binary "@$STATE/config.json" >/dev/null
    done
}

traffic() {
    local n="${1:-200}"
    printf '\n%-6s %-22s %s\n' VIP ADDRESS "REQUESTS PER BACKEND (weights 1:1:2)"
    for v in dsr4:10.100.0.1 dsr6:[fd00:100::1] ipip4:10.100.0.2 ipip6:[fd00:100::2] \
        gue4:10.100.0.3 gue6:[fd00:100::3] nat4:10.100.0.4 nat6:[fd00:100::4]; do
        local name="${v%%:*}" addr="${v#*:}"
        local counts
        counts=$(for _ in $(seq "$n"); do
            in_ns client curl -s --max-time 2 "http://$addr/" || echo failed
        done | sort | uniq -c | awk '{printf "%s=%s ", $2, $1}')
        printf '%-6s %-22s %s\n' "$name" "$addr" "$counts"
        if [[ "$counts" =~ failed=([0-9]+) ]]; then
            FAILED=$((FAILED + BASH_REMATCH[1]))
        fi
    done
}

up() {
    if [ -e "/run/netns/$(ns client)" ]; then
        echo "lab.sh: $PREFIX is up already (scripts/lab.sh down --prefix $PREFIX first)" >&2
        exit 1
    fi
    if [ "$BUILD" = 1 ]; then
        bash "$REPO/scripts/setup.sh"
        . "$REPO/scripts/env.sh"
        (cd "$REPO" && cargo build --quiet)
    fi
    mkdir -p "$STATE"
    # On EXIT, not ERR: an ERR trap is not run for failures inside the
    # functions below (no set -E) nor for their explicit `exit 1`.
    UP_DONE=0
    trap 'if [ "$UP_DONE" != 1 ]; then echo "lab.sh: up failed; removing what it made" >&2; down >/dev/null 2>&1; fi' EXIT
    topology
    start_backends
    start_lbs
    configure
    UP_DONE=1
    trap - EXIT
    echo "lab $PREFIX is up: namespaces $(ns client), $(ns router), $(lbs | sed "s/\([a-z0-9]*\)/$PREFIX-\1/g"), $(ns b1..3)"
    if [ "$TRAFFIC" = 1 ]; then
        traffic 200
        cat <<EOF

Watch it (inside the LB namespace: nsenter keeps the machine's bpffs in view):
  nsenter --net=/run/netns/$(ns lb) curl -s -X PATCH $API/v1/vips/dsr4 -H 'Content-Type: application/json' -d '{"event_sample_rate": 1}'
  nsenter --net=/run/netns/$(ns lb) $BIN tail --vip dsr4     # every decision of dsr4, live
  nsenter --net=/run/netns/$(ns lb) $BIN stats
  nsenter --net=/run/netns/$(ns lb) $BIN doctor --instance $(ns lb) --state-dir $STATE/lb
  nsenter --net=/run/netns/$(ns lb) curl -s $API/metrics
  nsenter --net=/run/netns/$(ns client) curl -s http://10.100.0.1/
  scripts/lab.sh down --prefix $PREFIX
EOF
    fi
}

status() {
    if [ ! -e "/run/netns/$(ns client)" ]; then
        echo "lab $PREFIX is down"
        return
    fi
    for lb in $(lbs); do
        local pid
        pid=$(cat "$STATE/$lb.pid" 2>/dev/null || echo)
        if [ -n "$pid" ] && alive "$pid"; then
            echo "$lb: lethe serve running (pid $pid)"
            in_ns "$lb" "$BIN" stats || true
        else
            echo "$lb: lethe serve not running"
        fi
    done
}

down() {
    for pidfile in "$STATE"/*.pid; do
        [ -e "$pidfile" ] || continue
        q kill "$(cat "$pidfile")"
    done
    sleep 0.2
    for pidfile in "$STATE"/*.pid; do
        [ -e "$pidfile" ] || continue
        q kill -9 "$(cat "$pidfile")"
    done
    local left=0
    for lb in lb lb2; do
        # Its own pin directory, or nothing to do (a lab without lb2).
        [ -e "/sys/fs/bpf/lethe/$PREFIX-$lb" ] || continue
        "$BIN" down --instance "$PREFIX-$lb" >/dev/null || left=1
    done
    for b in "${BACKENDS[@]}"; do
        if [ -e "/run/netns/$(ns "b$b")" ]; then
            q in_ns "b$b" "$BIN" decap detach b-eth --instance "$PREFIX-b$b"
        fi
        q rm -rf "/sys/fs/bpf/lethe-decap-$PREFIX-b$b"
    done
    for n in client router sw b1 b2 b3 lb lb2; do
        q ip netns del "$(ns "$n")"
    done
    rm -rf "$STATE"
    if [ "$left" = 1 ]; then
        echo "lab.sh: lethe down failed (above): pins of $PREFIX are left in /sys/fs/bpf/lethe" >&2
        exit 1
    fi
    echo "lab $PREFIX is down"
}

case "$CMD" in
up) up ;;
down) down ;;
status) status ;;
traffic)
    traffic "${TRAFFIC_N:-200}"
    if [ "$FAILED" != 0 ]; then
        echo "lab.sh: $FAILED requests failed" >&2
        exit 1
    fi
    ;;
start) start_lbs "${LBS[@]}" ;;
*) echo "usage: scripts/lab.sh up|down|status|traffic|start [lb|lb2] [--prefix P] [--ecmp] [--no-traffic] [--no-build]" >&2; exit 2 ;;
esac
