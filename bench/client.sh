#!/usr/bin/env bash
# Push and pull of the ~1 GiB 9-layer fixture image (`rbuild-fixtures synthetic --layers 9
# --layer-mb 110`), rbuild side by side with skopeo, in one run, against the same local
# CNCF distribution (Debian's docker-registry). Prints the best time of each and the ratio
# rbuild/skopeo (target: at most 0.8).
#
# Both sides read the same source: rbuild's store is an OCI image layout, so skopeo pushes
# `oci:STORE:latest` while rbuild pushes the image by name. Every push goes to an empty
# registry (a new one per run, on a new port, so no blob-location cache can mount anything);
# every pull goes into an empty store / OCI layout.
#
# docker is not in the table: dockerd may only be started through the tests' helper
# (conformance::peers::Dockerd), and `docker pull` also unpacks layers, which is not the
# same work.
#
# Env: BENCH_RUNS (default 3) runs per command (the best is kept), BENCH_DIR (default a
# fresh dir under /var/tmp) scratch space. Run as root.
set -euo pipefail

RUNS=${BENCH_RUNS:-3}
WORK=${BENCH_DIR:-$(mktemp -d /var/tmp/rbuild-client-bench.XXXXXX)}
ROOT=$(cd "$(dirname "$0")/.." && pwd)

source "$ROOT/bench/lib.sh"
require_tools skopeo docker-registry python3
cleanup() { stop_servers; rm -rf "$WORK"; }
trap cleanup EXIT

echo "building rbuild and rbuild-fixtures (release)..." >&2
cargo build --release -p rbuild -p fixtures --manifest-path "$ROOT/Cargo.toml" >&2
TARGET=$(cargo metadata --format-version 1 --no-deps --manifest-path "$ROOT/Cargo.toml" \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/release
RBUILD=$TARGET/rbuild
export DOCKER_CONFIG=$WORK/docker-config

# Starts an empty registry on a new port; sets PORT.
start_registry() {
    stop_servers
    PORT=$(free_port)
    local dir=$WORK/registry-$PORT
    mkdir -p "$dir"
    cat >"$dir/config.yml" <<YML
version: 0.1
log:
  level: error
storage:
  filesystem:
    rootdirectory: $dir/data
http:
  addr: 127.0.0.1:$PORT
YML
    docker-registry serve "$dir/config.yml" >"$dir/log" 2>&1 &
    PIDS+=($!)
    wait_port "$PORT"
}

# best NAME SECONDS: keeps the smallest time per name.
declare -A BEST
record() {
    local name=$1 t=$2
    if [[ -z "${BEST[$name]:-}" ]] || python3 -c "import sys; sys.exit(0 if $t < ${BEST[$name]} else 1)"; then
        BEST[$name]=$t
    fi
}

echo "generating the fixture image..." >&2
"$TARGET/rbuild-fixtures" synthetic --layers 9 --layer-mb 110 -o "$WORK/synthetic.tar" >&2
STORE=$WORK/store
RBUILD_ROOT=$STORE "$RBUILD" load -i "$WORK/synthetic.tar" >&2
rm -f "$WORK/synthetic.tar"
IMAGE=rbuild-fixtures/synthetic:latest
sync

for run in $(seq "$RUNS"); do
    echo "run $run/$RUNS: push" >&2
    start_registry
    t0=$(now)
    RBUILD_ROOT=$STORE "$RBUILD" push "$IMAGE" "127.0.0.1:$PORT/bench/rbuild:1" >/dev/null 2>&1
    record "push rbuild" "$(python3 -c "print($(now) - $t0)")"
    start_registry
    t0=$(now)
    skopeo copy -q --dest-tls-verify=false "oci:$STORE:latest" "docker://127.0.0.1:$PORT/bench/skopeo:1" >/dev/null
    record "push skopeo" "$(python3 -c "print($(now) - $t0)")"

    echo "run $run/$RUNS: pull" >&2
    # The registry from the last push holds the image (pushed by skopeo, the same bytes).
    rm -rf "$WORK/pull-rbuild" "$WORK/pull-skopeo"
    sync
    t0=$(now)
    RBUILD_ROOT=$WORK/pull-rbuild "$RBUILD" pull "127.0.0.1:$PORT/bench/skopeo:1" >/dev/null 2>&1
    record "pull rbuild" "$(python3 -c "print($(now) - $t0)")"
    rm -rf "$WORK/pull-rbuild"
    sync
    t0=$(now)
    skopeo copy -q --src-tls-verify=false "docker://127.0.0.1:$PORT/bench/skopeo:1" "oci:$WORK/pull-skopeo:latest" >/dev/null
    record "pull skopeo" "$(python3 -c "print($(now) - $t0)")"
    rm -rf "$WORK/pull-skopeo"
done
stop_servers

printf '\n%-6s %12s %12s %16s\n' op rbuild_s skopeo_s rbuild/skopeo
for op in push pull; do
    r=${BEST["$op rbuild"]}
    s=${BEST["$op skopeo"]}
    printf '%-6s %12.2f %12.2f %16.2f\n' "$op" "$r" "$s" "$(python3 -c "print($r / $s)")"
done
