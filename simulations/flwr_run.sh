#!/usr/bin/env bash
# Run fedgray as a Flower app (`flwr run .`) on a local simulation SuperLink that we start
# ourselves, so that Flower never installs dependencies at run time (see "Installing" in the README),
# writes nothing outside the run folder, and leaves no process behind.
#
# usage: [OVERRIDES="federation.num_rounds=2 ..."] simulations/flwr_run.sh [extra `flwr run` args]
# env:   CONFIG (the YAML config, default configs/quickstart.yaml), OVERRIDES (`--set`-style items,
#        space-separated), VENV_BIN (default: the active venv), RUN_DIR (default runs/flwr-<time>),
#        PORT (39191), NUM_SUPERNODES (8: becomes federation.num_sites), FEDGRAY_CACHE (where the
#        pretrained backbone is cached)
set -euo pipefail
cd "$(dirname "$0")/.."
APP_DIR=$PWD
RUN_DIR=$(realpath -m "${RUN_DIR:-runs/flwr-$(date +%Y%m%d-%H%M%S)}")
PORT=${PORT:-39191}
NUM_SUPERNODES=${NUM_SUPERNODES:-8}
mkdir -p "$RUN_DIR/ray"
START=$(date +%s.%N)

export FLWR_HOME="$RUN_DIR/flwr"
export FLWR_TELEMETRY_ENABLED=0 RAY_USAGE_STATS_ENABLED=0 RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO=0
export FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1
# Ray's AF_UNIX socket paths must stay under 108 bytes: reach $RUN_DIR/ray via a short link
LINK_DIR=$(mktemp -d /tmp/flrXXXXXX)
ln -s "$RUN_DIR/ray" "$LINK_DIR/r"
export RAY_TMPDIR="$LINK_DIR/r"
# the SuperLink starts flower-superexec/flwr-simulation by name: the venv must be on PATH
BIN=${VENV_BIN:-${VIRTUAL_ENV:+$VIRTUAL_ENV/bin}}
[ -n "$BIN" ] && export PATH="$BIN:$PATH"
command -v flower-superlink >/dev/null || { echo "activate the venv or set VENV_BIN" >&2; exit 2; }

mkdir -p "$FLWR_HOME"
cat > "$FLWR_HOME/config.toml" <<TOML
[superlink]
default = "fedgray"

[superlink.fedgray]
address = "127.0.0.1:$PORT"
insecure = true
TOML

setsid flower-superlink --insecure --simulation --isolation subprocess \
    --disable-runtime-dependency-installation --host 127.0.0.1 --port "$PORT" \
    --database "$RUN_DIR/superlink.db" --log-file "$RUN_DIR/superlink.log" \
    >"$RUN_DIR/superlink.out" 2>&1 &
SUPERLINK=$!

descendants() { local c; for c in $(pgrep -P "$1"); do echo "$c"; descendants "$c"; done; }
cleanup() {
    set +e  # best effort: a process that is already gone must not stop the cleanup
    # flower-superexec, flwr-simulation and Ray run in process groups of their own: collect
    # the group of every descendant first, then TERM them all, then KILL what is left.
    local groups
    groups=$({ echo "$SUPERLINK"; descendants "$SUPERLINK"; } | xargs -r ps -o pgid= -p 2>/dev/null | sort -u)
    for g in $groups; do kill -TERM -- "-$g" 2>/dev/null || true; done
    for _ in $(seq 50); do kill -0 "$SUPERLINK" 2>/dev/null || break; sleep 0.1; done
    sleep 1
    for g in $groups; do kill -KILL -- "-$g" 2>/dev/null || true; done
    wait "$SUPERLINK" 2>/dev/null || true
    rm -rf "$LINK_DIR"
}
trap cleanup EXIT

for _ in $(seq 100); do
    curl -sf "http://127.0.0.1:$PORT/health" >/dev/null && break
    sleep 0.2
done

flwr run "$APP_DIR" fedgray --stream \
    --federation-config "num-supernodes=$NUM_SUPERNODES client-resources-num-cpus=2 init-args-num-cpus=2" \
    --run-config "config=\"${CONFIG:-configs/quickstart.yaml}\" overrides=\"output.root='$(dirname "$RUN_DIR")' output.name='$(basename "$RUN_DIR")' federation.num_sites=$NUM_SUPERNODES ${OVERRIDES:-}\"" \
    "$@" 2>&1 | tee "$RUN_DIR/flwr_run.log"

echo "flwr run finished in $(echo "$(date +%s.%N) - $START" | bc) s; run folder: $RUN_DIR"
