#!/usr/bin/env bash
# End-to-end load against fakes: the AddAutopilotSession policy's added latency (issue
# "AddAutopilotSession policy"). The raw passthrough (litgate vs direct, and beside nginx and
# Envoy) is measured by benches/compare/run.sh, which replaced this script's former part A.
#
# Starts examples/fake_litd (fake litd over TLS + fake Autopilot server, plaintext) and two
# `target/release/litgate run` in front of that fake litd, all on 127.0.0.1:
#   via      the default stack ([cache] on);
#   nocache  the same with [cache] enabled = false (AddAutopilotSession is then policy +
#            forward, without the session cache's invalidation after a successful write).
# Then runs examples/load against the fake litd directly ("direct") and through litgate,
# rotating the order every round, and prints a summary. The headline compares
# AddAutopilotSession (intercepted: litgate's policy) with the very same call sent to the fake
# litd's alias path (`--mode add-alias`: same request, same answer, same work in the fake litd,
# but a path litgate does not know, so it takes the plain passthrough). See benches/README.md.
#
# Knobs (environment): ROUNDS (6), SERIAL_CALLS (3000), ADD_CALLS (1000: per add and per alias
# run), LIMITER (off | high: [rate_limit] on with limits it never reaches),
# ECHO_PAYLOAD (64: the secondary comparable call's message size), SKIP_BUILD (1: reuse the
# release binaries), KEEP (1: keep the work directory).
set -euo pipefail

cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-6}
SERIAL_CALLS=${SERIAL_CALLS:-3000}
ADD_CALLS=${ADD_CALLS:-1000}
ECHO_PAYLOAD=${ECHO_PAYLOAD:-64}
LIMITER=${LIMITER:-off}

if [[ ${SKIP_BUILD:-0} != 1 ]]; then
    # Two builds: built together with the examples, the binary would get the examples'
    # dependency features (tokio's test-util among them: a locked clock on every timer read)
    # and other symbol names than `cargo build --release --bin litgate` gives; this is that.
    cargo build --release --bin litgate >&2
    cargo build --release --examples >&2
fi
TARGET_DIR=$(cargo metadata --format-version 1 --no-deps 2>/dev/null |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
BIN=$TARGET_DIR/release
for b in litgate examples/fake_litd examples/load; do
    [[ -x $BIN/$b ]] || { echo "missing $BIN/$b (build first)" >&2; exit 1; }
done

WORK=$(mktemp -d -t litgate-load.XXXXXX)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    if [[ ${KEEP:-0} == 1 ]]; then echo "work directory kept: $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT INT TERM

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}
wait_for() { # wait_for DESCRIPTION COMMAND...: poll up to 10 s
    local what=$1
    shift
    for _ in $(seq 1 200); do
        if "$@" >/dev/null 2>&1; then return 0; fi
        sleep 0.05
    done
    echo "timed out waiting for $what" >&2
    exit 1
}

LITD_PORT=$(free_port)
AP_PORT=$(free_port)

# --- fakes
"$BIN/examples/fake_litd" --litd-addr "127.0.0.1:$LITD_PORT" \
    --autopilot-addr "127.0.0.1:$AP_PORT" --dir "$WORK/litd" >"$WORK/fake_litd.log" 2>&1 &
PIDS+=($!)
wait_for "fake litd" test -s "$WORK/litd/lit.macaroon.hex"
MAC=$WORK/litd/lit.macaroon.hex
LITD_CERT=$WORK/litd/tls.cert

# --- litgate
case $LIMITER in
off) RATE_LIMIT='enabled = false' ;;
high) RATE_LIMIT=$'enabled = true\nread = { iterations = 4000000000, num_hours = 1 }\nwrite = { iterations = 4000000000, num_hours = 1 }' ;;
*)
    echo "LIMITER must be off or high" >&2
    exit 2
    ;;
esac
start_gate() { # start_gate NAME PORT ADMIN_PORT CACHE_ENABLED; sets GATE_PID
    local name=$1 port=$2 admin=$3 cache=$4
    cat >"$WORK/$name.toml" <<TOML
[listen]
addr = "127.0.0.1:$port"
plaintext = false

[upstream]
addr = "127.0.0.1:$LITD_PORT"
tls_cert = "$LITD_CERT"
server_name = "localhost"

[autopilot]
server = "127.0.0.1:$AP_PORT"
plaintext = true

[autopilot.relay]
addr = ""

[rate_limit]
$RATE_LIMIT

[cache]
enabled = $cache

[store]
data_dir = "$WORK/$name-data"

[admin]
addr = "127.0.0.1:$admin"

[log]
level = "info"
TOML
    "$BIN/litgate" run --config "$WORK/$name.toml" >"$WORK/$name.log" 2>&1 &
    GATE_PID=$!
    PIDS+=("$GATE_PID")
    wait_for "litgate $name /ready" curl -fsS "http://127.0.0.1:$admin/ready"
    wait_for "litgate $name certificate" test -s "$WORK/$name-data/tls.cert"
}
NOCACHE_PORT=$(free_port)
NOCACHE_ADMIN=$(free_port)
start_gate nocache "$NOCACHE_PORT" "$NOCACHE_ADMIN" false
NOCACHE_PID=$GATE_PID
GATE_PORT=$(free_port)
ADMIN_PORT=$(free_port)
start_gate litgate "$GATE_PORT" "$ADMIN_PORT" true
VIA_PID=$GATE_PID

DIRECT="--target https://127.0.0.1:$LITD_PORT --cert $LITD_CERT"
VIA="--target https://127.0.0.1:$GATE_PORT --cert $WORK/litgate-data/tls.cert"
NOCACHE="--target https://127.0.0.1:$NOCACHE_PORT --cert $WORK/nocache-data/tls.cert"
RESULTS=$WORK/results.jsonl
: >"$RESULTS"

rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$GATE_PID/status"; }
hwm_kb() { awk '/^VmHWM:/ {print $2}' "/proc/$GATE_PID/status"; }
cpu_ticks() { # utime + stime of a process, in clock ticks
    awk '{print $14 + $15}' "/proc/$1/stat"
}
cpu_ns() { # time on CPU of a process's live threads, in ns (schedstat: no tick rounding)
    local s=0 t f
    for f in /proc/"$1"/task/*/schedstat; do
        read -r t _ 2>/dev/null <"$f" || continue
        s=$((s + t))
    done
    echo "$s"
}
metrics() { curl -fsS "http://127.0.0.1:$ADMIN_PORT/metrics"; }
metric() { # sum of a metric family's samples on the "via" litgate
    metrics | awk -v n="$1" '$1 ~ "^"n"([{]|$)" {s += $NF} END {printf "%d\n", s}'
}

# run LABEL ROUND TARGET-ARGS LOAD-ARGS...: one load process; appends a tagged JSON line.
run() {
    local label=$1 round=$2
    shift 2
    local line pid=0 cpu0=0 cpu1=0 ns0=0 ns1=0
    case $label in
    */via) pid=$VIA_PID ;;
    */nocache) pid=$NOCACHE_PID ;;
    esac
    if ((pid)); then cpu0=$(cpu_ticks "$pid"); ns0=$(cpu_ns "$pid"); fi
    line=$("$BIN/examples/load" "$@") || {
        echo "load failed: $label $*" >&2
        exit 1
    }
    if ((pid)); then cpu1=$(cpu_ticks "$pid"); ns1=$(cpu_ns "$pid"); fi
    python3 -c 'import json,sys; d=json.loads(sys.argv[1]); d["label"]=sys.argv[2]; d["round"]=int(sys.argv[3]); d["litgate_cpu_ticks"]=int(sys.argv[4]); d["litgate_cpu_ns"]=int(sys.argv[5]); print(json.dumps(d))' \
        "$line" "$label" "$round" "$((cpu1 - cpu0))" "$((ns1 - ns0))" >>"$RESULTS"
    python3 -c 'import json,sys; d=json.loads(sys.argv[1]); print("  round %s %-22s median %6.0f us  p99 %6.0f us  %6.0f calls/s" % (sys.argv[3], sys.argv[2], d["median_us"], d["p99_us"], d["throughput_cps"]))' \
        "$line" "$label" "$round" >&2
}
# run_set LABEL ROUND "SIDES" LOAD-ARGS...: the same load on each side (direct, via, nocache),
# in an order that rotates with the round (and reverses on odd rounds), so neither side
# always goes first while the machine warms up or another job starts.
run_set() {
    local label=$1 round=$2 sides=($3)
    shift 3
    local n=${#sides[@]} order=() i
    for ((i = 0; i < n; i++)); do order+=("${sides[$(((i + round / 2) % n))]}"); done
    if ((round % 2 == 1)); then
        local rev=()
        for ((i = n - 1; i >= 0; i--)); do rev+=("${order[$i]}"); done
        order=("${rev[@]}")
    fi
    for side in "${order[@]}"; do
        case $side in
        direct) run "$label/direct" "$round" $DIRECT "$@" ;;
        via) run "$label/via" "$round" $VIA "$@" ;;
        nocache) run "$label/nocache" "$round" $NOCACHE "$@" ;;
        esac
    done
}

sleep 1
RSS_IDLE=$(rss_kb)
CONN_BEFORE=$(metric litgate_upstream_connections_total)
REQ_BEFORE=$(metric litgate_requests_total)
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)

# --- AddAutopilotSession (policy) vs the same call passed through, serial.
# add-alias is the same request to the fake litd's alias path, which litgate forwards as it
# forwards any method it does not intercept: its via-minus-direct is the passthrough share of
# exactly this call, subtracted from the AddAutopilotSession's via-minus-direct. The two run
# back to back in each round, in an order that alternates. Echo.Unary with the same macaroon
# metadata and a 64-byte message is the former (secondary) comparable call.
echo "AddAutopilotSession, $ROUNDS rounds" >&2
for r in $(seq 0 $((ROUNDS - 1))); do
    modes=(add add-alias)
    if ((r % 2 == 1)); then modes=(add-alias add); fi
    for m in "${modes[@]}"; do
        label=add-serial
        [[ $m == add-alias ]] && label=alias-serial
        run_set "$label" "$r" "direct via nocache" --mode "$m" --concurrency 1 \
            --calls "$ADD_CALLS" --warmup 50 --macaroon-file "$MAC"
    done
    run_set "echo-mac-serial" "$r" "direct via nocache" --mode echo --concurrency 1 \
        --calls "$SERIAL_CALLS" --macaroon-file "$MAC" --payload "$ECHO_PAYLOAD"
done
RSS_END=$(rss_kb)
HWM_END=$(hwm_kb)
CONN_END=$(metric litgate_upstream_connections_total)
REQ_END=$(metric litgate_requests_total)
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)
FETCHES=$(metric litgate_catalogue_fetches_total)

# --- summary
export RESULTS ROUNDS LIMITER ECHO_PAYLOAD RSS_IDLE RSS_END HWM_END \
    CONN_BEFORE CONN_END REQ_BEFORE REQ_END LOAD_BEFORE LOAD_AFTER FETCHES
export MACHINE="$(nproc) cores, $(uname -srm)" CLK_TCK="$(getconf CLK_TCK)"
python3 - <<'PY'
import json, os, re, statistics as st
E = os.environ
rows = [json.loads(l) for l in open(E["RESULTS"])]
def by(label): return {r["round"]: r for r in rows if r["label"] == label}
def med(xs): return st.median(xs)
def rng(xs, f=".2f"): return f"[{min(xs):{f}}..{max(xs):{f}}]"
def pair(label, key, a="direct", b="via"):
    d, v = by(f"{label}/{a}"), by(f"{label}/{b}")
    return [(d[r][key], v[r][key]) for r in sorted(d)]
def cpu_us(label):
    """litgate's CPU per call over every round of a label, warmup calls included: the time its
    threads spent on a CPU (schedstat, ns), and the same from utime + stime (clock ticks, which
    also count threads that ended during the run but round to 10 ms per run)."""
    d = list(by(label).values())
    ticks = sum(r["litgate_cpu_ticks"] for r in d)
    ns = sum(r["litgate_cpu_ns"] for r in d)
    calls = sum(r["count"] + r["warmup"] for r in d)
    return ns / 1e3 / calls, ticks * 1e6 / int(E["CLK_TCK"]) / calls
def mib(k): return f"{int(E[k]) / 1024:.1f} MiB"

print()
print(f"machine: {E['MACHINE']}; load average before {E['LOAD_BEFORE']}, after {E['LOAD_AFTER']}")
print(f"rounds: {E['ROUNDS']} (order of sides rotates per round); rate limiter: {E['LIMITER']}; "
      "litgate log level info; all on 127.0.0.1, TLS on both hops")
print()
print(f"{'run':<26}{'median us':>10}{'p90 us':>9}{'p99 us':>9}{'mean us':>9}{'calls/s':>9}   (median over rounds)")
for label in ["add-serial", "alias-serial", "echo-mac-serial"]:
    for side in ["direct", "via", "nocache"]:
        d = list(by(f"{label}/{side}").values())
        if not d:
            continue
        print(f"{label + '/' + side:<26}" + "".join(
            f"{med([r[k] for r in d]):>{w}.0f}" for k, w in
            [("median_us", 10), ("p90_us", 9), ("p99_us", 9), ("mean_us", 9), ("throughput_cps", 9)]))
print()
print(f"  litgate RSS (VmRSS): idle {mib('RSS_IDLE')}; at the end {mib('RSS_END')} (VmHWM {mib('HWM_END')})")
print(f"  litgate_upstream_connections_total: before {E['CONN_BEFORE']}, after {E['CONN_END']}; "
      f"litgate_requests_total: {E['REQ_BEFORE']} -> {E['REQ_END']}")
print()
def beyond(base, gate="via"):
    """Per round: (add via - add direct) - (base via - base direct), and the two parts."""
    a = pair("add-serial", "median_us", b=gate); c = pair(base, "median_us", b=gate)
    add = [v - d for d, v in a]; pt = [v - d for d, v in c]
    return [x - y for x, y in zip(add, pt)], add, pt
print("AddAutopilotSession (HealthCheck, warm catalogue), serial; per-round, median [min..max]")
a = pair("add-serial", "median_us")
pol, add_via, alias_pt = beyond("alias-serial")
print(f"  AddAutopilotSession median: direct {med([d for d, _ in a]):.0f} us, via {med([v for _, v in a]):.0f} us; "
      f"via - direct {med(add_via):.0f} us {rng(add_via, '.0f')}")
print(f"  the same call passed through (add-alias) via - direct {med(alias_pt):.0f} us {rng(alias_pt, '.0f')}")
print(f"  => HEADLINE: litgate's AddAutopilotSession handling beyond passing the same call through "
      f"(decode, authentication verdict, policy, rewrite, cache invalidation): {med(pol):.0f} us {rng(pol, '.0f')}")
pol2, _, _ = beyond("alias-serial", gate="nocache")
inv = [x - y for x, y in zip(pol, pol2)]
print(f"  same on the [cache]-off litgate (no invalidation): "
      f"{med(pol2):.0f} us {rng(pol2, '.0f')}")
print(f"  => share of the session cache's invalidation (cache on - cache off): {med(inv):.0f} us {rng(inv, '.0f')}")
(ca, cat), (cl, clt) = cpu_us("add-serial/via"), cpu_us("alias-serial/via")
(na, nat), (nl, nlt) = cpu_us("add-serial/nocache"), cpu_us("alias-serial/nocache")
print(f"  => HEADLINE CPU: litgate CPU per call: AddAutopilotSession {ca:.1f} us vs the same call passed through "
      f"{cl:.1f} us (cache on: {ca - cl:+.1f} us); [cache]-off litgate {na:.1f} vs {nl:.1f} us ({na - nl:+.1f} us)")
print(f"     (from clock ticks instead: cache on {cat - clt:+.0f} us, cache off {nat - nlt:+.0f} us)")
epol, _, ept = beyond("echo-mac-serial")
ce, _ = cpu_us("echo-mac-serial/via")
print(f"  secondary: beyond Echo.Unary + macaroon ({E['ECHO_PAYLOAD']} B; via - direct {med(ept):.0f} us "
      f"{rng(ept, '.0f')}): {med(epol):.0f} us {rng(epol, '.0f')}; CPU +{ca - ce:.0f} us ({ca:.0f} vs {ce:.0f} us)")
print(f"  catalogue fetches by the via litgate over the whole run: {E['FETCHES']} (warm: the first call fetches)")
print()
print(f"calls failed: {sum(r['errors'] for r in rows)}; calls measured: {sum(r['count'] for r in rows)}")
PY
