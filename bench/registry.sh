#!/usr/bin/env bash
# rregistry vs CNCF distribution 2.8 (Debian's docker-registry), side by side in one run:
#   - skopeo push and pull of a ~1 GiB, 9-layer image (generated here as an OCI layout), and
#     once more with rbuild's own client (not a target row: it shows what the servers allow a
#     client that is not skopeo-bound);
#   - wrk on manifest GET by tag, blob HEAD, 1 MiB blob GET and 64 MiB blob GET.
# Prints a table with the ratios. Targets (issue 3): >= 3x distribution's req/s on manifest
# GET and blob HEAD, >= 1.5x its throughput on 64 MiB GET, push+pull <= 0.7x its time.
#
# Usage: bench/registry.sh            (builds rregistry in release mode first)
# Env:   WRK_SECONDS (default 10), WRK_CONNECTIONS (default 32), IMAGE_MIB (default 1024),
#        BENCH_ROUNDS (default 1): push/pull rounds, each on fresh storage with the registries
#        taking turns going first; push and pull figures are the medians of the rounds.
set -euo pipefail

cd "$(dirname "$0")/.."
WRK_SECONDS=${WRK_SECONDS:-10}
WRK_CONNECTIONS=${WRK_CONNECTIONS:-32}
IMAGE_MIB=${IMAGE_MIB:-1024}
ROUNDS=${BENCH_ROUNDS:-1}

# wrk cannot measure HEAD (its parser waits for a body after a HEAD response's
# Content-Length), so blob HEAD uses ApacheBench (`ab -i`, Debian's apache2-utils).
source bench/lib.sh
require_tools docker-registry skopeo wrk ab pigz curl sha256sum python3

cargo build --release -q -p registry --bin rregistry -p rbuild --bin rbuild
RREGISTRY=$PWD/target/release/rregistry
RBUILD=$PWD/target/release/rbuild

WORK=$(mktemp -d /var/tmp/rbuild-bench-registry.XXXXXX)
cleanup() { stop_servers; rm -rf "$WORK"; }
trap cleanup EXIT

# --- the image: 9 gzip layers of random data (incompressible, so sizes are what they say) ---
echo "generating a ${IMAGE_MIB} MiB 9-layer OCI layout..." >&2
LAYOUT=$WORK/image
mkdir -p "$LAYOUT/blobs/sha256"
layers_json=""
diff_ids=""
per_layer=$((IMAGE_MIB / 9))
for i in $(seq 1 9); do
    mkdir -p "$WORK/layer$i"
    head -c "$((per_layer * 1024 * 1024))" /dev/urandom > "$WORK/layer$i/data$i"
    tar -C "$WORK/layer$i" --owner=0 --group=0 --mtime=@0 -cf "$WORK/layer$i.tar" .
    diff_id=$(sha256sum "$WORK/layer$i.tar" | cut -c1-64)
    pigz -n -1 -c "$WORK/layer$i.tar" > "$WORK/layer$i.tar.gz"
    digest=$(sha256sum "$WORK/layer$i.tar.gz" | cut -c1-64)
    size=$(stat -c %s "$WORK/layer$i.tar.gz")
    mv "$WORK/layer$i.tar.gz" "$LAYOUT/blobs/sha256/$digest"
    rm -rf "$WORK/layer$i" "$WORK/layer$i.tar"
    layers_json+="${layers_json:+,}{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar+gzip\",\"digest\":\"sha256:$digest\",\"size\":$size}"
    diff_ids+="${diff_ids:+,}\"sha256:$diff_id\""
done
printf '{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[%s]}}' "$diff_ids" > "$WORK/config"
config_digest=$(sha256sum "$WORK/config" | cut -c1-64)
cp "$WORK/config" "$LAYOUT/blobs/sha256/$config_digest"
printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%d},"layers":[%s]}' \
    "$config_digest" "$(stat -c %s "$WORK/config")" "$layers_json" > "$WORK/manifest"
manifest_digest=$(sha256sum "$WORK/manifest" | cut -c1-64)
cp "$WORK/manifest" "$LAYOUT/blobs/sha256/$manifest_digest"
echo '{"imageLayoutVersion":"1.0.0"}' > "$LAYOUT/oci-layout"
printf '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%d,"annotations":{"org.opencontainers.image.ref.name":"bench"}}]}' \
    "$manifest_digest" "$(stat -c %s "$WORK/manifest")" > "$LAYOUT/index.json"

# --- the two registries, same config shape (bench/lib.sh), logs at info to files ---
start_registries() {
    start_fs_registry distribution "" docker-registry serve
    start_fs_registry rregistry "" "$RREGISTRY" serve --config
}

declare -A RESULT

# --- skopeo push and pull, alternating who goes first ---
copy_time() { # src dst
    seconds_of skopeo copy -q --preserve-digests --src-tls-verify=false --dest-tls-verify=false "$1" "$2"
}
# The client's own floor: the same copy between two local layouts, no registry involved.
RESULT[local_copy]=$(copy_time "oci:$LAYOUT:bench" "oci:$WORK/local-copy:bench")
rm -rf "$WORK/local-copy"
declare -A SAMPLES
median() { python3 -c 'import statistics, sys; print(statistics.median(map(float, sys.argv[1:])))' "$@"; }
for round in $(seq "$ROUNDS"); do
    # Fresh storage every round: a blob already stored is not written again.
    if [ "$round" -gt 1 ]; then stop_servers; fi
    start_registries
    if ((round % 2)); then order=(distribution rregistry); else order=(rregistry distribution); fi
    for name in "${order[@]}"; do
        port_var=PORT_$name
        port=${!port_var}
        pid_var=PID_$name
        pid=${!pid_var}
        sync
        t0=$(cpu_ticks "$pid")
        SAMPLES[push_$name]+="$(copy_time "oci:$LAYOUT:bench" "docker://127.0.0.1:$port/bench/image:bench") "
        SAMPLES[pushcpu_$name]+="$(cpu_since "$pid" "$t0") "
        sync
        t0=$(cpu_ticks "$pid")
        SAMPLES[pull_$name]+="$(copy_time "docker://127.0.0.1:$port/bench/image:bench" "oci:$WORK/pulled-$name:bench") "
        SAMPLES[pullcpu_$name]+="$(cpu_since "$pid" "$t0") "
        rm -rf "$WORK/pulled-$name"
    done
done
for key in "${!SAMPLES[@]}"; do
    # shellcheck disable=SC2086 # the samples are words
    RESULT[$key]=$(median ${SAMPLES[$key]})
done

# --- the same image pushed and pulled by rbuild's own client, which is not the bound that
# skopeo is (bench/client.sh): what the servers allow a faster client. Fresh storage, once.
skopeo copy -q "oci:$LAYOUT:bench" "oci-archive:$WORK/image.tar:bench/image:bench"
RBUILD_ROOT=$WORK/rbuild-store "$RBUILD" load -q -i "$WORK/image.tar"
rm -f "$WORK/image.tar"
stop_servers
start_registries
for name in distribution rregistry; do
    port_var=PORT_$name
    ref=127.0.0.1:${!port_var}/bench/image:bench
    sync
    RESULT[rbpush_$name]=$(seconds_of env RBUILD_ROOT="$WORK/rbuild-store" "$RBUILD" push bench/image:bench "$ref")
    sync
    RESULT[rbpull_$name]=$(seconds_of env RBUILD_ROOT="$WORK/rbuild-pulled" "$RBUILD" pull "$ref")
    rm -rf "$WORK/rbuild-pulled"
done

# --- wrk ---
push_blob() { # port file -> digest; POST then PUT, which both registries support
    local digest loc sep
    digest=sha256:$(sha256sum "$2" | cut -c1-64)
    loc=$(curl -sf -X POST -D - -o /dev/null "http://127.0.0.1:$1/v2/bench/blobs/blobs/uploads/" | tr -d '\r' | awk 'tolower($1)=="location:"{print $2}')
    case $loc in http*) ;; *) loc="http://127.0.0.1:$1$loc" ;; esac
    sep='?'; case $loc in *\?*) sep='&' ;; esac
    curl -sf -X PUT -H 'Content-Type: application/octet-stream' --data-binary @"$2" "$loc${sep}digest=$digest" -o /dev/null
    echo "$digest"
}
head -c $((1 << 20)) /dev/urandom > "$WORK/blob1m"
head -c $((64 << 20)) /dev/urandom > "$WORK/blob64m"
ab_head() { # url -> "req/s 0"
    local out
    out=$(ab -q -i -k -c "$WRK_CONNECTIONS" -t "$WRK_SECONDS" -n 100000000 "$1" 2>&1)
    python3 - "$out" <<'EOF'
import re, sys
out = sys.argv[1]
bad = re.search(r"Non-2xx responses:\s+(\d+)", out)
if bad:
    sys.exit(f"ab saw {bad.group(1)} error responses:\n{out}")
rps = float(re.search(r"Requests per second:\s+([\d.]+)", out).group(1))
print(f"{rps:.1f} 0")
EOF
}
for name in distribution rregistry; do
    port_var=PORT_$name
    port=${!port_var}
    base=http://127.0.0.1:$port
    d1=$(push_blob "$port" "$WORK/blob1m")
    d64=$(push_blob "$port" "$WORK/blob64m")
    RESULT[manifest_$name]=$(wrk_run "$base/v2/bench/image/manifests/bench" -H "Accept: application/vnd.oci.image.manifest.v1+json")
    RESULT[head_$name]=$(ab_head "$base/v2/bench/blobs/blobs/$d1")
    RESULT[get1m_$name]=$(wrk_run "$base/v2/bench/blobs/blobs/$d1")
    pid_var=PID_$name
    t0=$(cpu_ticks "${!pid_var}")
    RESULT[get64m_$name]=$(wrk_run "$base/v2/bench/blobs/blobs/$d64" -c4)
    # CPU seconds per GiB sent: MiB/s times the run's length is what was sent.
    RESULT[get64mcpu_$name]=$(python3 -c "print($(cpu_since "${!pid_var}" "$t0") / (${RESULT[get64m_$name]#* } * $WRK_SECONDS / 1024))")
done

# --- the table ---
python3 - <<EOF
r = {k: v for k, v in [
$(for k in "${!RESULT[@]}"; do echo "    (\"$k\", \"${RESULT[$k]}\"),"; done)
]}
def num(key, i=0): return float(r[key].split()[i])
rows = []
print(f"{'benchmark':<34}{'distribution':>16}{'rregistry':>16}{'ratio':>9}   target (ratio = times better)")
# ratio: how many times better rregistry is (distribution's time / ours, or our rate / its).
def line(label, d, o, unit, better_high, target=None):
    ratio = (o / d) if better_high else (d / o)
    goal = "" if target is None else f">= {target}x " + ("ok" if ratio >= target else "MISSED")
    print(f"{label:<34}{d:>12.2f} {unit:<3}{o:>12.2f} {unit:<3}{ratio:>8.2f}x   {goal}")
mib = "${IMAGE_MIB}"
if ${ROUNDS} > 1:
    print(f"(push and pull: medians of ${ROUNDS} rounds, fresh storage each, alternating who goes first)")
line(f"skopeo push {mib} MiB / 9 layers", num("push_distribution"), num("push_rregistry"), "s", False)
line(f"skopeo pull {mib} MiB / 9 layers", num("pull_distribution"), num("pull_rregistry"), "s", False)
pp_d = num("push_distribution") + num("pull_distribution")
pp_o = num("push_rregistry") + num("pull_rregistry")
# Target: push+pull in at most 0.7x distribution's time, i.e. a ratio of at least 1/0.7.
line("push + pull", pp_d, pp_o, "s", False, 1.43)
print(f"{'  (skopeo oci: -> oci:, no registry)':<34}{num('local_copy'):>12.2f} s    the client's floor for one copy")
line(f"rbuild push {mib} MiB (our client)", num("rbpush_distribution"), num("rbpush_rregistry"), "s", False)
line(f"rbuild pull {mib} MiB (our client)", num("rbpull_distribution"), num("rbpull_rregistry"), "s", False)
line("  rbuild push + pull", num("rbpush_distribution") + num("rbpull_distribution"), num("rbpush_rregistry") + num("rbpull_rregistry"), "s", False)
line("manifest GET by tag", num("manifest_distribution"), num("manifest_rregistry"), "r/s", True, 3)
line("blob HEAD", num("head_distribution"), num("head_rregistry"), "r/s", True, 3)
line("1 MiB blob GET", num("get1m_distribution"), num("get1m_rregistry"), "r/s", True)
line("64 MiB blob GET", num("get64m_distribution", 1), num("get64m_rregistry", 1), "MiB", True, 1.5)
print("server CPU (user + system; less noisy than the rates above on a shared machine):")
line("  skopeo push", num("pushcpu_distribution"), num("pushcpu_rregistry"), "s", False)
line("  skopeo pull", num("pullcpu_distribution"), num("pullcpu_rregistry"), "s", False)
line("  64 MiB blob GET, per GiB sent", num("get64mcpu_distribution"), num("get64mcpu_rregistry"), "s", False)
EOF
