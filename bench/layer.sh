#!/usr/bin/env bash
# Layer create/apply, side by side with the classic pipelines, in one run:
#   create+gzip  ours vs `tar -C DIR -cf - . | pigz -p2`
#   create+zstd  ours vs `tar -C DIR -cf - . | zstd -T0`
#   apply .tar   ours vs `tar -xf`
#   apply .tgz   ours vs `pigz -dc | tar -xf -`
# on two generated directories: text-like (compressible) and /dev/urandom (incompressible).
#
# Env: BENCH_SIZE_MB (default 1024) size of each directory, BENCH_RUNS (default 3) runs per
# command (the best is kept), BENCH_DIR (default a fresh dir under /var/tmp) scratch space.
# Run as root so that both sides restore ownership the same way.
set -euo pipefail

SIZE_MB=${BENCH_SIZE_MB:-1024}
RUNS=${BENCH_RUNS:-3}
WORK=${BENCH_DIR:-$(mktemp -d /var/tmp/rbuild-layer-bench.XXXXXX)}
ROOT=$(cd "$(dirname "$0")/.." && pwd)

for tool in tar pigz zstd python3; do
    command -v "$tool" >/dev/null || { echo "missing peer tool: $tool" >&2; exit 1; }
done

cleanup() { rm -rf "$WORK"; }
trap cleanup EXIT

echo "building bench (release)..." >&2
cargo build --release -p bench --manifest-path "$ROOT/Cargo.toml" >&2
BIN=$(cargo metadata --format-version 1 --no-deps --manifest-path "$ROOT/Cargo.toml" \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/release/layer

# Files of mixed sizes (many small, some large), 100 per directory, like a real rootfs.
generate() { # KIND DIR
    python3 - "$1" "$2" "$SIZE_MB" <<'PY'
import os, random, sys
kind, root, size_mb = sys.argv[1], sys.argv[2], int(sys.argv[3])
rng = random.Random(42)
words = [''.join(rng.choice('abcdefghijklmnopqrstuvwxyz') for _ in range(rng.randint(2, 10)))
         for _ in range(5000)]
corpus = bytearray()
while len(corpus) < 16 << 20:
    line = ' '.join(rng.choice(words) for _ in range(rng.randint(4, 14)))
    corpus += (line + ('\n' if rng.random() < 0.8 else ';\n    ')).encode()
corpus = bytes(corpus)
total, target, n = 0, size_mb << 20, 0
while total < target:
    r = rng.random()
    size = rng.randint(1 << 10, 64 << 10) if r < 0.7 else \
        rng.randint(64 << 10, 1 << 20) if r < 0.95 else rng.randint(1 << 20, 32 << 20)
    size = min(size, target - total)
    d = os.path.join(root, f"d{n // 100:04d}")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, f"f{n:06d}"), 'wb') as f:
        if kind == 'random':
            f.write(os.urandom(size))
        else:
            left = size
            while left:
                off = rng.randrange(len(corpus))
                chunk = corpus[off:off + left]
                f.write(chunk)
                left -= len(chunk)
    total += size
    n += 1
PY
}

# Best wall-clock seconds of RUNS runs of a shell command; PREP runs untimed before each.
best_of() { # PREP CMD
    local best="" t0 t1 t
    for _ in $(seq "$RUNS"); do
        eval "$1"
        sync
        t0=$(date +%s.%N)
        eval "$2"
        t1=$(date +%s.%N)
        t=$(echo "$t1 - $t0" | bc -l)
        if [ -z "$best" ] || [ "$(echo "$t < $best" | bc -l)" = 1 ]; then best=$t; fi
    done
    echo "$best"
}

ROWS=()
row() { # CASE DATA MB OURS PEER OURS_BYTES PEER_BYTES
    ROWS+=("$(printf '%-14s %-9s %8.2f %8.2f %9.1f %9.1f %7.2f %10s %10s' \
        "$1" "$2" "$4" "$5" "$(echo "$3 / $4" | bc -l)" "$(echo "$3 / $5" | bc -l)" \
        "$(echo "$4 / $5" | bc -l)" "$6" "$7")")
}

for kind in text random; do
    DIR=$WORK/$kind
    mkdir -p "$DIR"
    echo "generating $SIZE_MB MiB of $kind data..." >&2
    generate "$kind" "$DIR"
    MB=$(echo "$(du -sb "$DIR" | cut -f1) / 1048576" | bc -l)
    OUT=$WORK/out
    mkdir -p "$OUT"

    echo "[$kind] create+gzip" >&2
    ours=$(best_of "rm -f $OUT/ours.tgz" "$BIN create $DIR $OUT/ours.tgz --compression gzip >/dev/null")
    peer=$(best_of "rm -f $OUT/peer.tgz" "tar -C $DIR -cf - . | pigz -p2 > $OUT/peer.tgz")
    row "create+gzip" "$kind" "$MB" "$ours" "$peer" "$(stat -c %s "$OUT/ours.tgz")" "$(stat -c %s "$OUT/peer.tgz")"

    echo "[$kind] create+zstd" >&2
    ours=$(best_of "rm -f $OUT/ours.tzst" "$BIN create $DIR $OUT/ours.tzst --compression zstd >/dev/null")
    peer=$(best_of "rm -f $OUT/peer.tzst" "tar -C $DIR -cf - . | zstd -q -T0 > $OUT/peer.tzst")
    row "create+zstd" "$kind" "$MB" "$ours" "$peer" "$(stat -c %s "$OUT/ours.tzst")" "$(stat -c %s "$OUT/peer.tzst")"

    # Both extractors read the same tar (ours); then the same gzip blob.
    $BIN create "$DIR" "$OUT/layer.tar" --compression none >/dev/null
    echo "[$kind] apply tar" >&2
    ours=$(best_of "rm -rf $OUT/x; mkdir $OUT/x" "$BIN apply $OUT/layer.tar $OUT/x >/dev/null")
    peer=$(best_of "rm -rf $OUT/x; mkdir $OUT/x" "tar -C $OUT/x -xf $OUT/layer.tar")
    row "apply tar" "$kind" "$MB" "$ours" "$peer" "-" "-"

    echo "[$kind] apply tgz" >&2
    ours=$(best_of "rm -rf $OUT/x; mkdir $OUT/x" "$BIN apply $OUT/ours.tgz $OUT/x >/dev/null")
    peer=$(best_of "rm -rf $OUT/x; mkdir $OUT/x" "pigz -dc $OUT/ours.tgz | tar -C $OUT/x -xf -")
    row "apply tgz" "$kind" "$MB" "$ours" "$peer" "-" "-"

    rm -rf "$DIR" "$OUT"
done

echo
echo "layer benchmark: ${SIZE_MB} MiB per data set, best of $RUNS, $(nproc) CPUs"
printf '%-14s %-9s %8s %8s %9s %9s %7s %10s %10s\n' \
    case data ours_s peer_s ours_MB/s peer_MB/s ratio ours_bytes peer_bytes
for r in "${ROWS[@]}"; do echo "$r"; done
echo "(ratio = ours_s / peer_s: below 1 means rbuild is faster)"
