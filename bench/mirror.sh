#!/usr/bin/env bash
# rregistry as a pull-through mirror vs CNCF distribution 2.8 in proxy mode (Debian's
# docker-registry with `proxy.remoteurl`), side by side in one run, in front of the same
# upstream (a plain docker-registry holding the ~1 GiB synthetic fixture image):
#   - direct pull from the upstream (the floor a cold mirror pull is measured against);
#   - cold pull through each mirror (empty cache: fetched from the upstream while served);
#   - warm pull through each mirror (everything cached);
#   - cold pull through rregistry with `proxy.prefetchblobs` (a manifest starts its layers'
#     downloads before the client asks).
# Pulls are `skopeo copy docker://… oci:…`. Prints a table with the ratios. Targets (issue 8):
# warm pull <= 0.7x distribution's warm pull; cold pull <= 1.1x the direct pull.
#
# Usage: bench/mirror.sh            (builds rregistry and rbuild-fixtures in release mode first)
# Env:   LAYERS (default 9), LAYER_MB (default 110), ROUNDS (default 1: warm pulls per mirror)
set -euo pipefail

cd "$(dirname "$0")/.."
LAYERS=${LAYERS:-9}
LAYER_MB=${LAYER_MB:-110}
ROUNDS=${ROUNDS:-1}

source bench/lib.sh
require_tools docker-registry skopeo python3

cargo build --release -q -p registry --bin rregistry
cargo build --release -q -p fixtures --bin rbuild-fixtures
RREGISTRY=$PWD/target/release/rregistry
FIXTURES=$PWD/target/release/rbuild-fixtures

WORK=$(mktemp -d /var/tmp/rbuild-bench-mirror.XXXXXX)
cleanup() { stop_servers; rm -rf "$WORK"; }
trap cleanup EXIT

echo "generating a ${LAYERS}x${LAYER_MB} MB synthetic image..." >&2
"$FIXTURES" synthetic --layers "$LAYERS" --layer-mb "$LAYER_MB" --name bench/image:bench -o "$WORK/image.tar"

start_fs_registry upstream "" docker-registry serve
skopeo copy -q --dest-tls-verify=false "oci-archive:$WORK/image.tar" "docker://127.0.0.1:$PORT_upstream/bench/image:bench"
rm -f "$WORK/image.tar"
PROXY="proxy:
  remoteurl: http://127.0.0.1:$PORT_upstream"
start_fs_registry distribution "$PROXY" docker-registry serve
start_fs_registry rregistry "$PROXY" "$RREGISTRY" serve --config
start_fs_registry prefetching "$PROXY
  prefetchblobs: true" "$RREGISTRY" serve --config

declare -A RESULT
pull_time() { # port
    local t0 t1
    rm -rf "$WORK/pulled"
    sync
    t0=$(now)
    skopeo copy -q --src-tls-verify=false "docker://127.0.0.1:$1/bench/image:bench" "oci:$WORK/pulled:bench" >/dev/null
    t1=$(now)
    rm -rf "$WORK/pulled"
    python3 -c "print($t1 - $t0)"
}

# distribution's proxy writes the cache after serving; wait for it, so that its writes do not
# slow the next measurement.
blob_count() { find "$WORK/$1/data/docker/registry/v2/blobs" -name data 2>/dev/null | wc -l; }
wait_cached() { # name
    for _ in $(seq 600); do
        [ "$(blob_count "$1")" -ge "$(blob_count upstream)" ] && { sync; return 0; }
        sleep 0.1
    done
    echo "$1 never cached every blob" >&2
}

RESULT[direct]=$(pull_time "$PORT_upstream")
for name in distribution rregistry; do
    port_var=PORT_$name
    RESULT[cold_$name]=$(pull_time "${!port_var}")
    wait_cached "$name"
    best=""
    for _ in $(seq "$ROUNDS"); do
        t=$(pull_time "${!port_var}")
        best=$(python3 -c "print(min(float('$t'), float('${best:-$t}')))")
    done
    RESULT[warm_$name]=$best
done
# rregistry with proxy.prefetchblobs: the manifest starts every layer's download.
RESULT[cold_prefetching]=$(pull_time "$PORT_prefetching")
wait_cached prefetching
echo "blobs cached: distribution $(blob_count distribution), rregistry $(blob_count rregistry), upstream $(blob_count upstream)" >&2

python3 - <<PY
r = {k: float(v) for k, v in [
$(for k in "${!RESULT[@]}"; do echo "    (\"$k\", \"${RESULT[$k]}\"),"; done)
]}
mb = ${LAYERS} * ${LAYER_MB}
print(f"{'pull of a ' + str(mb) + ' MB image':<34}{'distribution':>14}{'rregistry':>12}{'ratio':>9}   target")
def line(label, d, o, target, note=""):
    ratio = o / d
    print(f"{label:<34}{d:>12.2f} s{o:>10.2f} s{ratio:>8.2f}x   <= {target}x " + ("ok" if ratio <= target else "MISSED") + note)
line("warm pull (cached)", r["warm_distribution"], r["warm_rregistry"], 0.7)
print(f"{'cold pull (empty cache)':<34}{r['cold_distribution']:>12.2f} s{r['cold_rregistry']:>10.2f} s{r['cold_rregistry'] / r['cold_distribution']:>8.2f}x")
line("cold pull vs direct from upstream", r["direct"], r["cold_rregistry"], 1.1, "   (ratio to the direct pull)")
print(f"{'  the same, with prefetchblobs':<34}{r['direct']:>12.2f} s{r['cold_prefetching']:>10.2f} s{r['cold_prefetching'] / r['direct']:>8.2f}x   (not a target: see docs/BENCHMARKS.md)")
print(f"{'  direct pull from the upstream':<34}{r['direct']:>12.2f} s")
PY
