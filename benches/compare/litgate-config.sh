# Sourced by benches/compare/run.sh and benches/instructions.sh: the litgate config both
# measure, so that their figures are of the same litgate.
#
# litgate_bench_config DIR UPSTREAM UPSTREAM_CERT PLAINTEXT AUTOPILOT THREADS [LIMITER]
#   writes DIR/litgate.toml: a real config, rate limiter on (limits it never reaches: every
#   call is checked, none refused; LIMITER=off leaves it out), session cache on, relay off (no litd autopilot client
#   here), logs at info in JSON, public and admin on port 0. PLAINTEXT (true/false) applies to
#   both hops; UPSTREAM_CERT is pinned when it is TLS.
litgate_bench_config() {
    local dir=$1 up=$2 upcert=$3 plain=$4 ap=$5 threads=$6 limiter=${7:-on}
    local rate_limit=$'enabled = true\nread = { iterations = 4000000000, num_hours = 1 }\nwrite = { iterations = 4000000000, num_hours = 1 }'
    [[ $limiter == off ]] && rate_limit='enabled = false'
    mkdir -p "$dir"
    cat >"$dir/litgate.toml" <<TOML
[listen]
addr = "127.0.0.1:0"
plaintext = $plain

[upstream]
addr = "$up"
tls_cert = "$upcert"
server_name = "localhost"
plaintext = $plain

[autopilot]
server = "$ap"
plaintext = true

[autopilot.relay]
addr = ""

[rate_limit]
$rate_limit

[cache]
enabled = true

[store]
data_dir = "$dir/data"

[admin]
addr = "127.0.0.1:0"

[log]
level = "info"
format = "json"

[runtime]
threads = $threads
TOML
}
