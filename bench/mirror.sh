#!/usr/bin/env bash
# rregistry as a pull-through mirror vs CNCF distribution 2.8 in proxy mode (Debian's
# docker-registry with `proxy.remoteurl`), side by side in one run, in front of the same
# upstream (a plain docker-registry holding the ~1 GiB synthetic fixture image):
#   - direct pull from the upstream (the floor a cold mirror pull is measured against);
#   - cold pull through each mirror (empty cache: fetched from the upstream while served);
#   - warm pull through each mirror (everything cached);
#   - cold pull through rregistry with `proxy.prefetchblobs` (a manifest starts its layers'
#     downloads before the client asks).
# Then the same cold, warm and direct pulls again with the upstream behind a slow link
# (bench's slow-link relay: LINK_MBIT each way, LINK_RTT_MS round trip), where a mirror is
# meant to work: on loopback every process shares the same two cores, and the mirror's CPU is
# taken from the client's; behind a link the upstream's bandwidth is the bound, as it is for a
# mirror in front of Docker Hub.
# Pulls are `skopeo copy docker://… oci:…`. Prints a table with the ratios. Targets (issue 8):
# warm pull <= 0.7x distribution's warm pull; cold pull <= 1.1x the direct pull.
#
# Usage: bench/mirror.sh            (builds rregistry, rbuild-fixtures and slow-link first)
# Env:   LAYERS (default 9), LAYER_MB (default 110), ROUNDS (default 1: warm pulls per mirror),
#        LINK_MBIT (default 1000), LINK_RTT_MS (default 20)
set -euo pipefail

cd "$(dirname "$0")/.."
LAYERS=${LAYERS:-9}
LAYER_MB=${LAYER_MB:-110}
ROUNDS=${ROUNDS:-1}
LINK_MBIT=${LINK_MBIT:-1000}
LINK_RTT_MS=${LINK_RTT_MS:-20}

source bench/lib.sh
require_tools docker-registry skopeo python3

cargo build --release -q -p registry --bin rregistry
cargo build --release -q -p fixtures --bin rbuild-fixtures
cargo build --release -q -p bench --bin slow-link
RREGISTRY=$PWD/target/release/rregistry
FIXTURES=$PWD/target/release/rbuild-fixtures
SLOW_LINK=$PWD/target/release/slow-link

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
PORT_link=$(free_port)
"$SLOW_LINK" --listen "127.0.0.1:$PORT_link" --to "127.0.0.1:$PORT_upstream" \
    --rate-mbit "$LINK_MBIT" --rtt-ms "$LINK_RTT_MS" 2>"$WORK/slow-link.log" &
PIDS+=($!)
wait_port "$PORT_link"
LINKED_PROXY="proxy:
  remoteurl: http://127.0.0.1:$PORT_link"
start_fs_registry linked_distribution "$LINKED_PROXY" docker-registry serve
start_fs_registry linked_rregistry "$LINKED_PROXY" "$RREGISTRY" serve --config

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
RESULT[linked_direct]=$(pull_time "$PORT_link")
for name in distribution rregistry linked_distribution linked_rregistry; do
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
print(f"the upstream behind a ${LINK_MBIT} Mbit/s link with a ${LINK_RTT_MS} ms round trip:")
line("  warm pull (cached)", r["warm_linked_distribution"], r["warm_linked_rregistry"], 0.7)
print(f"{'  cold pull (empty cache)':<34}{r['cold_linked_distribution']:>12.2f} s{r['cold_linked_rregistry']:>10.2f} s{r['cold_linked_rregistry'] / r['cold_linked_distribution']:>8.2f}x")
line("  cold pull vs direct", r["linked_direct"], r["cold_linked_rregistry"], 1.1, "   (ratio to the direct pull)")
print(f"{'  direct pull through the link':<34}{r['linked_direct']:>12.2f} s")
PY
