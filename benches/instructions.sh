#!/usr/bin/env bash
# Instructions per serial call, counted by valgrind's callgrind: litgate beside the floor
# (examples/h2_floor: the leanest h2c proxy on the same HTTP/2 crates, raw h2 and with hyper's
# server) and nginx, all h2c in front of the comparison's minimal upstream. A count does not move
# with the machine's load or with where the scheduler puts the processes, which the serial
# latencies of benches/compare/ do by up to x2 on a 2-core VM; it is the measure to compare two
# builds of litgate by, and the answer to "how much work is litgate's own".
#
#   bash benches/instructions.sh                          # builds, installs valgrind if missing
#   SKIP_BUILD=1 SECS=3 VARIANTS="base=/tmp/litgate-base" bash benches/instructions.sh
#
# Knobs: SECS [5] measured seconds per target (under valgrind: a few thousand calls); TARGETS
# ["floor floor-hyper nginx litgate"], and "add": AddAutopilotSession through litgate against
# the same call passed through (the fake litd's alias path; TLS both hops, ADD_CALLS [1500]
# serial calls of each); VARIANTS ["NAME=BINARY ..."]: other litgate builds;
# SKIP_BUILD [0]; KEEP [0] keeps the work directory (callgrind files for callgrind_annotate);
# ORDER_OUT [unset]: also write the functions litgate ran in the counted calls (targets litgate
# and add), hottest first, to this file: link/symbol-order.txt is made so (link/generate.sh).
# Each target gets 2 s of calls before the count is zeroed (connections, caches, catalogue).
# Everything listens on 127.0.0.1; every process started here is stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${SECS:-5}
TARGETS=${TARGETS:-"floor floor-hyper nginx litgate"}
for v in ${VARIANTS:-}; do TARGETS+=" litgate-${v%%=*}"; done

command -v valgrind >/dev/null || { apt-get install -y valgrind >&2 || { echo "instructions: valgrind is needed" >&2; exit 1; }; }
if [[ $TARGETS == *nginx* ]] && ! command -v nginx >/dev/null; then
    apt-get install -y nginx >&2 || { echo "instructions: nginx is needed (or leave it out of TARGETS)" >&2; exit 1; }
fi
if [[ ${SKIP_BUILD:-0} != 1 ]]; then
    # Two builds: built together with the examples, the binary would get the examples'
    # dependency features (tokio's test-util among them: a locked clock on every timer read)
    # and other symbol names than `cargo build --release --bin litgate` gives; this is that.
    cargo build --release --locked --bin litgate >&2
    cargo build --release --locked --example grpc_upstream --example grpc_load \
        --example h2_floor --example fake_litd --example load >&2
fi
BIN=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/release
WORK=$(mktemp -d -t litgate-instr.XXXXXX)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    if [[ ${KEEP:-0} == 1 ]]; then echo "work directory kept: $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT INT TERM
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }
wait_line() { # wait_line FILE REGEX: the first capture once FILE has a matching line (30 s)
    for _ in $(seq 300); do
        if grep -qP "$2" "$1" 2>/dev/null; then grep -oP "$2" "$1" | head -1; return; fi
        sleep 0.1
    done
    echo "instructions: timed out waiting for '$2' in $1" >&2
    exit 1
}

ANSWER=0a0f6c6974676174652d636f6d70617265
"$BIN/examples/grpc_upstream" --message-hex "$ANSWER" >"$WORK/upstream.log" 2>&1 &
PIDS+=($!)
UP=$(wait_line "$WORK/upstream.log" '^listening \K\S+')
load() { # load ADDR SECONDS
    "$BIN/examples/grpc_load" --target "$1" --path /litgatetest.Echo/Unary --request-hex 0a0568656c6c6f \
        --check frame --expect-hex "$ANSWER" --connections 1 --streams 1 --warmup 0s --duration "$2s"
}

wait_port() { # wait_port HOST:PORT: until it accepts a connection (30 s)
    python3 - "$1" <<'PY' || { echo "instructions: nothing listens on $1" >&2; exit 1; }
import socket, sys, time
host, port = sys.argv[1].rsplit(":", 1)
for _ in range(300):
    try:
        socket.create_connection((host, int(port)), timeout=1).close()
        sys.exit(0)
    except OSError:
        time.sleep(0.1)
sys.exit(1)
PY
}

# count NAME WHERE COMMAND...: starts COMMAND under callgrind and counts SECS of serial calls.
# WHERE is the address to call, or "log:REGEX" to read it from what COMMAND prints.
count() {
    local name=$1 where=$2 dir=$WORK/$1 addr
    shift 2
    mkdir -p "$dir"
    valgrind --tool=callgrind --demangle=no --callgrind-out-file="$dir/callgrind.out.%p" "$@" >"$dir/out.log" 2>&1 &
    local vp=$!
    PIDS+=("$vp")
    case $where in
    log:*) addr=$(wait_line "$dir/out.log" "${where#log:}") ;;
    *) addr=$where ;;
    esac
    wait_port "$addr"
    load "$addr" 2 >/dev/null
    callgrind_control -z "$vp" >/dev/null
    load "$addr" "$SECS" >"$dir/load.json"
    callgrind_control -d "$vp" >/dev/null
    sleep 1
    local calls ir
    calls=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["calls"])' "$dir/load.json")
    ir=$(callgrind_annotate "$dir"/callgrind.out.*.1 2>/dev/null | grep -m1 'PROGRAM TOTALS' | grep -oP '^[\d,]+' | tr -d ,)
    kill "$vp" 2>/dev/null || true
    [[ $name == litgate ]] && PROFILES+=("$dir"/callgrind.out.*.1)
    printf '| %s | %s | %s |\n' "$name" "$calls" "$((ir / calls))"
}
PROFILES=() # litgate's counted calls, for ORDER_OUT

# shellcheck source=benches/compare/litgate-config.sh
source benches/compare/litgate-config.sh
litgate_config() { # litgate_config DIR: benches/compare's litgate config, h2c, one thread
    litgate_bench_config "$1" "$UP" "" true 127.0.0.1:9 1
}

echo "instructions per serial call (callgrind Ir, user space of the proxy), h2c both hops, $SECS s each"
echo
echo "| target | calls counted | instructions per call |"
echo "|---|---:|---:|"
for t in $TARGETS; do
    case $t in
    floor) count floor 'log:^listening \K\S+' "$BIN/examples/h2_floor" --upstream "$UP" ;;
    floor-hyper) count floor-hyper 'log:^listening \K\S+' "$BIN/examples/h2_floor" --upstream "$UP" --hyper ;;
    nginx)
        d=$WORK/nginx-conf port=$(free_port)
        mkdir -p "$d/tmp"
        cat >"$d/nginx.conf" <<NGINX
daemon off; master_process off; worker_processes 1; pid $d/nginx.pid; error_log $d/error.log warn;
events { worker_connections 1024; }
http { access_log off; client_body_temp_path $d/tmp/b; proxy_temp_path $d/tmp/p; fastcgi_temp_path $d/tmp/f;
 uwsgi_temp_path $d/tmp/u; scgi_temp_path $d/tmp/s; keepalive_requests 1000000000;
 upstream up { server $UP; keepalive 16; keepalive_requests 1000000000; }
 server { listen 127.0.0.1:$port http2; location / { grpc_pass grpc://up; } } }
NGINX
        count nginx "127.0.0.1:$port" nginx -e "$d/error.log" -p "$d" -c "$d/nginx.conf"
        ;;
    litgate)
        litgate_config "$WORK/litgate-conf"
        count litgate 'log:^litgate listening public=\K\S+' "$BIN/litgate" run --config "$WORK/litgate-conf/litgate.toml"
        ;;
    litgate-*)
        name=${t#litgate-} bin=""
        for v in ${VARIANTS:-}; do [[ ${v%%=*} == "$name" ]] && bin=${v#*=}; done
        litgate_config "$WORK/$t-conf"
        count "$t" 'log:^litgate listening public=\K\S+' "$bin" run --config "$WORK/$t-conf/litgate.toml"
        ;;
    add) ;; # after this table
    *) echo "instructions: unknown target $t" >&2; exit 2 ;;
    esac
done

# AddAutopilotSession (intercepted: policy, rewrite, cache invalidation) against the very same
# call at the fake litd's alias path, which litgate forwards as a plain passthrough call.
if [[ " $TARGETS " == *" add "* ]]; then
    ADD_CALLS=${ADD_CALLS:-1500}
    d=$WORK/add
    mkdir -p "$d"
    "$BIN/examples/fake_litd" --litd-addr 127.0.0.1:0 --autopilot-addr 127.0.0.1:0 --dir "$d/litd" >"$d/litd.log" 2>&1 &
    PIDS+=($!)
    litd=$(wait_line "$d/litd.log" '^litd=\K\S+')
    ap=$(wait_line "$d/litd.log" ' autopilot=\K\S+')
    # As load.sh runs it: TLS both hops, the rate limiter off.
    litgate_bench_config "$d" "$litd" "$d/litd/tls.cert" false "$ap" 1 off
    valgrind --tool=callgrind --demangle=no --callgrind-out-file="$d/callgrind.out.%p" "$BIN/litgate" run --config "$d/litgate.toml" >"$d/out.log" 2>&1 &
    vp=$!
    PIDS+=("$vp")
    gate=$(wait_line "$d/out.log" '^litgate listening public=\K\S+')
    for _ in $(seq 300); do [[ -s $d/data/tls.cert ]] && break; sleep 0.1; done
    add_load() { # add_load MODE CALLS
        "$BIN/examples/load" --target "https://$gate" --cert "$d/data/tls.cert" --mode "$1" \
            --concurrency 1 --calls "$2" --warmup 0 --macaroon-file "$d/litd/lit.macaroon.hex" >/dev/null
    }
    add_load add 200
    add_load add-alias 200
    declare -A per_call=()
    for mode in add add-alias; do
        callgrind_control -z "$vp" >/dev/null
        add_load "$mode" "$ADD_CALLS"
        callgrind_control -d "$vp" >/dev/null
        sleep 1
        f=$(ls -t "$d"/callgrind.out.*.* | head -1)
        ir=$(callgrind_annotate "$f" 2>/dev/null | grep -m1 'PROGRAM TOTALS' | grep -oP '^[\d,]+' | tr -d ,)
        per_call[$mode]=$((ir / ADD_CALLS))
        PROFILES+=("$f")
    done
    kill "$vp" 2>/dev/null || true
    echo
    echo "AddAutopilotSession through litgate (fake litd, TLS both hops, warm catalogue), $ADD_CALLS serial calls each"
    echo
    echo "| call | instructions per call |"
    echo "|---|---:|"
    echo "| AddAutopilotSession (intercepted) | ${per_call[add]} |"
    echo "| the same call passed through (alias path) | ${per_call[add-alias]} |"
    echo "| **the interception's own** | **$((per_call[add] - per_call[add-alias]))** |"
fi

if [[ -n ${ORDER_OUT:-} ]]; then
    python3 link/symbols.py order --binary "$BIN/litgate" --out "$ORDER_OUT" "${PROFILES[@]}"
fi
