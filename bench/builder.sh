#!/usr/bin/env bash
# Builder benchmark: rbuild beside BuildKit (Debian's dockerd, DOCKER_BUILDKIT=1) and buildah,
# in one run, on the same contexts and base images. Prints seconds per scenario and the ratio
# rbuild / peer. Scenarios: cold build, no-change rebuild, one-file change, export to an OCI tar.
#
#   bash bench/builder.sh              # both workloads
#   BENCH_WORKLOADS=files bash bench/builder.sh
#   BENCH_ROUNDS=3 BENCH_WORKLOADS=apt bash bench/builder.sh   # median of 3 rounds
#
# With several rounds the tools take turns going first (rbuild, BuildKit, buildah; then
# BuildKit, buildah, rbuild; ...), so that none is always the one that meets a cold Debian
# mirror or a cold page cache, and each cell is the median of its rounds.
#
# Workloads: "files" — a multi-stage build copying ~5,000 files / ~100 MB, a RUN that reads them
# all, and a second stage; "apt" — the Debian bookworm fixture plus `apt-get install` of a few
# packages (needs Debian's archive, reachable from this machine).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
cargo build --release --locked -q -p rbuild -p fixtures
bin=$PWD/target/release
work=$(mktemp -d /var/tmp/rbuild-bench-builder.XXXXXX)
workloads=${BENCH_WORKLOADS:-files apt}

export RBUILD_ROOT=$work/rbuild-store
source scripts/dockerd.sh
cleanup() {
  stop_dockerd
  buildah rm --all >/dev/null 2>&1 || true
  buildah rmi -f bench:1 >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
start_dockerd "$work/dockerd"
docker=/usr/bin/docker

# Base images, the same bytes in all three tools.
"$bin/rbuild-fixtures" busybox --format docker --name bench-base:busybox -o "$work/busybox.tar" >/dev/null
load_base() { # archive name
  "$bin/rbuild" load -q -i "$1"
  $docker load -q -i "$1" >/dev/null
  # Tagged by the ID the pull prints: with several images, "the first one listed" is a guess.
  buildah tag "$(buildah pull -q "docker-archive:$1")" "$2"
}
load_base "$work/busybox.tar" bench-base:busybox

# The "files" workload.
files=$work/files
mkdir -p "$files/data"
python3 - "$files/data" <<'PY'
import os, random, sys
random.seed(7)
root = sys.argv[1]
words = [b"layer", b"cache", b"build", b"image", b"digest", b"stage", b"copy", b"run"]
for d in range(50):
    os.makedirs(os.path.join(root, f"d{d:02}"), exist_ok=True)
    for f in range(100):
        with open(os.path.join(root, f"d{d:02}", f"f{f:03}.txt"), "wb") as out:
            out.write(b" ".join(random.choice(words) for _ in range(3400)))
PY
echo "one" > "$files/data/one.txt"
cat > "$files/Dockerfile" <<'DF'
FROM bench-base:busybox AS build
COPY data/ /data/
RUN find /data -type f | xargs cat | wc -c > /total && sha256sum /total > /total.sum
FROM bench-base:busybox
COPY --from=build /total /total.sum /
COPY data/one.txt /one.txt
DF

# The "apt" workload.
apt=$work/apt
mkdir -p "$apt"
if [[ " $workloads " == *" apt "* ]]; then
  "$bin/rbuild-fixtures" debian --format docker --name bench-base:debian -o "$work/debian.tar" >/dev/null
  load_base "$work/debian.tar" bench-base:debian
  cat > "$apt/Dockerfile" <<'DF'
FROM bench-base:debian
RUN apt-get update && apt-get install -y --no-install-recommends curl ca-certificates jq && rm -rf /var/lib/apt/lists/*
COPY one.txt /one.txt
DF
  echo "one" > "$apt/one.txt"
fi

time_of() { local s e; s=$(date +%s.%N); "$@" >/dev/null 2>&1 || { echo "FAILED: $*" >&2; exit 1; }; e=$(date +%s.%N); echo "$e - $s" | bc; }

rbuild_build()  { "$bin/rbuild" build -q -t bench:1 "$1"; }
buildkit_build() { DOCKER_BUILDKIT=1 $docker build --network host -q -t bench:1 "$1"; }
buildah_build() { buildah bud --layers --isolation chroot --network host -q -t bench:1 "$1"; }
# Like the peers' resets, rbuild's keeps the base images unpacked: prune's GC removes every
# unpacked layer that neither an image nor the (removed) build cache needs.
rbuild_reset()  { "$bin/rbuild" rmi bench:1 >/dev/null 2>&1 || true; rm -rf "$RBUILD_ROOT/build-cache"; "$bin/rbuild" prune >/dev/null; }
buildkit_reset() { $docker rmi -f bench:1 >/dev/null 2>&1 || true; $docker builder prune -af >/dev/null; }
buildah_reset() { buildah rmi -f bench:1 >/dev/null 2>&1 || true; buildah rmi --prune >/dev/null 2>&1 || true; }
rbuild_export()  { "$bin/rbuild" save --format oci -o "$work/out-rbuild.tar" bench:1; }
# docker 20.10's BuildKit cannot write OCI archives (that needs buildx): `docker save` it is.
buildkit_export() { $docker save -o "$work/out-buildkit.tar" bench:1; }
buildah_export() { buildah push -q bench:1 "oci-archive:$work/out-buildah.tar"; }

printf '%-8s %-14s %10s %10s %10s %12s %12s\n' workload scenario rbuild buildkit buildah "r/buildkit" "r/buildah"
rounds=${BENCH_ROUNDS:-1}
tools=(rbuild buildkit buildah)
median() { tr ' ' '\n' <<<"$1" | grep . | sort -n | awk '{v[NR] = $1} END {print v[int((NR + 1) / 2)]}'; }
for w in $workloads; do
  ctx=$work/$w
  declare -A t=()
  for ((round = 0; round < rounds; round++)); do
    first=$((round % ${#tools[@]}))
    for tool in "${tools[@]:first}" "${tools[@]:0:first}"; do
      ${tool}_reset
      t[$tool,cold]+="$(time_of ${tool}_build "$ctx") "
      t[$tool,nochange]+="$(time_of ${tool}_build "$ctx") "
      if [[ $w == files ]]; then echo "$tool $RANDOM" > "$ctx/data/one.txt"; else echo "$tool $RANDOM" > "$ctx/one.txt"; fi
      t[$tool,onefile]+="$(time_of ${tool}_build "$ctx") "
      t[$tool,export]+="$(time_of ${tool}_export "$ctx") "
    done
  done
  for s in cold nochange onefile export; do
    # Every round's seconds too, on stderr: on this machine one slow round is common.
    ((rounds > 1)) && echo "  $w $s, per round: rbuild ${t[rbuild,$s]}/ buildkit ${t[buildkit,$s]}/ buildah ${t[buildah,$s]}" >&2
    r=$(median "${t[rbuild,$s]}"); b=$(median "${t[buildkit,$s]}"); h=$(median "${t[buildah,$s]}")
    printf '%-8s %-14s %10.2f %10.2f %10.2f %12.2f %12.2f\n' "$w" "$s" "$r" "$b" "$h" "$(echo "$r / $b" | bc -l)" "$(echo "$r / $h" | bc -l)"
  done
  unset t
done
echo "targets: cold <= 0.9x BuildKit, no-change rebuild <= 0.5x, one-file change <= 0.7x"
