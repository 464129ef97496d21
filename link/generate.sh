#!/usr/bin/env bash
# Remakes link/symbol-order.txt, the hot-function order of litgate's release link (README.md
# here): builds the release binary, runs benches/instructions.sh's litgate calls under callgrind
# (serial passthrough calls over h2c to the minimal upstream; AddAutopilotSession and the same
# call passed through, over TLS to the fake litd) and lists the functions they ran, hottest
# first. Needs valgrind (installed with apt-get when missing); about 3 minutes after the build.
#
#   bash link/generate.sh           # remake the list (then rebuild: build.rs relinks with it)
#   bash link/generate.sh --check   # build, and fail if the list no longer fits the build
set -euo pipefail
cd "$(dirname "$0")/.."
# Apart from the examples: built with them, the binary gets their dependency features and other
# names (benches/instructions.sh says more).
cargo build --release --locked --bin litgate >&2
BIN=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/release
if [[ ${1:-} == --check ]]; then
    exec python3 link/symbols.py check link/symbol-order.txt "$BIN/litgate"
fi
cargo build --release --locked --example grpc_upstream --example grpc_load \
    --example fake_litd --example load >&2
SKIP_BUILD=1 ORDER_OUT=link/symbol-order.txt TARGETS="litgate add" bash benches/instructions.sh
