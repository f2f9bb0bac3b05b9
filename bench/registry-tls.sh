#!/usr/bin/env bash
# rregistry vs CNCF distribution 2.8 (Debian's docker-registry) behind HTTPS and htpasswd
# Basic auth, side by side in one run, same certificate, same htpasswd file (bcrypt cost 10,
# htpasswd's default for -B is 5; 10 is what people deploy):
#   - wrk over HTTPS (HTTP/1.1, keep-alive) with Basic credentials on every request:
#     manifest GET by tag and 64 MiB blob GET;
#   - the same manifest GET without TLS and auth, to show what auth + TLS cost each server.
# Prints a table with the ratios (rregistry / distribution for rates: above 1 is better).
#
# Usage: bench/registry-tls.sh        (builds rregistry in release mode first)
# Env:   WRK_SECONDS (default 10), WRK_CONNECTIONS (default 32)
set -euo pipefail

cd "$(dirname "$0")/.."
WRK_SECONDS=${WRK_SECONDS:-10}
WRK_CONNECTIONS=${WRK_CONNECTIONS:-32}

source bench/lib.sh
require_tools docker-registry wrk curl openssl htpasswd sha256sum python3

cargo build --release -q -p registry --bin rregistry
RREGISTRY=$PWD/target/release/rregistry

WORK=$(mktemp -d /var/tmp/rbuild-bench-registry-tls.XXXXXX)
cleanup() { stop_servers; rm -rf "$WORK"; }
trap cleanup EXIT

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj /CN=bench \
    -addext subjectAltName=IP:127.0.0.1 -keyout "$WORK/server.key" -out "$WORK/server.crt" 2>/dev/null
htpasswd -bBC 10 -c "$WORK/htpasswd" bench bench-pw 2>/dev/null
AUTH="Authorization: Basic $(printf 'bench:bench-pw' | base64)"

# name tls(yes|no) binary args... ; sets PORT_<name>
start_registry() {
    local name=$1 tls=$2 port extra=""; shift 2
    port=$(free_port)
    mkdir -p "$WORK/$name"
    if [ "$tls" = yes ]; then
        extra="  tls:
    certificate: $WORK/server.crt
    key: $WORK/server.key
auth:
  htpasswd:
    realm: bench
    path: $WORK/htpasswd"
    fi
    cat > "$WORK/$name/config.yml" <<EOF
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $WORK/data-${name%%_*}
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$port
$extra
EOF
    "$@" "$WORK/$name/config.yml" > "$WORK/$name/log" 2>&1 &
    PIDS+=($!)
    wait_port "$port"
    printf -v "PORT_$name" '%s' "$port"
}
# The plain and the TLS instance of each server share one data directory.
start_registry distribution_plain no docker-registry serve
start_registry distribution_tls yes docker-registry serve
start_registry rregistry_plain no "$RREGISTRY" serve --config
start_registry rregistry_tls yes "$RREGISTRY" serve --config

# One image per server (through its plain listener): a config blob, a 64 MiB layer, a manifest.
push_blob() { # port file -> digest (POST then PUT)
    local digest loc sep
    digest=sha256:$(sha256sum "$2" | cut -c1-64)
    loc=$(curl -sf -X POST -D - -o /dev/null "http://127.0.0.1:$1/v2/bench/tls/blobs/uploads/" | tr -d '\r' | awk 'tolower($1)=="location:"{print $2}')
    case $loc in http*) ;; *) loc="http://127.0.0.1:$1$loc" ;; esac
    sep='?'; case $loc in *\?*) sep='&' ;; esac
    curl -sf -X PUT -H 'Content-Type: application/octet-stream' --data-binary @"$2" "$loc${sep}digest=$digest" -o /dev/null
    echo "$digest"
}
head -c $((64 << 20)) /dev/urandom > "$WORK/blob64m"
echo '{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}' > "$WORK/config"
declare -A RESULT
for name in distribution rregistry; do
    plain_var=PORT_${name}_plain
    tls_var=PORT_${name}_tls
    plain=${!plain_var}
    tls=${!tls_var}
    cfg=$(push_blob "$plain" "$WORK/config")
    layer=$(push_blob "$plain" "$WORK/blob64m")
    printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"%s","size":%d},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"%s","size":%d}]}' \
        "$cfg" "$(stat -c %s "$WORK/config")" "$layer" "$(stat -c %s "$WORK/blob64m")" > "$WORK/manifest"
    curl -sf -X PUT -H 'Content-Type: application/vnd.oci.image.manifest.v1+json' --data-binary @"$WORK/manifest" \
        "http://127.0.0.1:$plain/v2/bench/tls/manifests/bench" -o /dev/null
    # wrk does not verify certificates; curl checks once that the TLS listener answers.
    curl -sf --cacert "$WORK/server.crt" -H "$AUTH" "https://127.0.0.1:$tls/v2/" -o /dev/null
    accept="Accept: application/vnd.oci.image.manifest.v1+json"
    RESULT[plain_$name]=$(wrk_run "http://127.0.0.1:$plain/v2/bench/tls/manifests/bench" -H "$accept")
    RESULT[manifest_$name]=$(wrk_run "https://127.0.0.1:$tls/v2/bench/tls/manifests/bench" -H "$accept" -H "$AUTH")
    RESULT[get64m_$name]=$(wrk_run "https://127.0.0.1:$tls/v2/bench/tls/blobs/$layer" -H "$AUTH" -c4)
done

python3 - <<EOF
r = {k: v for k, v in [
$(for k in "${!RESULT[@]}"; do echo "    (\"$k\", \"${RESULT[$k]}\"),"; done)
]}
def num(key, i=0): return float(r[key].split()[i])
print(f"{'benchmark':<40}{'distribution':>16}{'rregistry':>16}{'ratio':>9}")
def line(label, d, o, unit):
    print(f"{label:<40}{d:>12.1f} {unit:<3}{o:>12.1f} {unit:<3}{o / d:>8.2f}x")
line("manifest GET, plain HTTP, no auth", num("plain_distribution"), num("plain_rregistry"), "r/s")
line("manifest GET, HTTPS + Basic (bcrypt 10)", num("manifest_distribution"), num("manifest_rregistry"), "r/s")
line("64 MiB blob GET, HTTPS + Basic", num("get64m_distribution", 1), num("get64m_rregistry", 1), "MiB")
EOF
