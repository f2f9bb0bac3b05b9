#!/usr/bin/env bash
# The main job end to end on a fresh Debian 12 machine, as root: install what is missing,
# build rbuild, make a base image from Debian's busybox-static, build a multi-stage Dockerfile
# with rbuild, run the result with docker, and save it as an OCI archive.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
cargo build --release --locked -p rbuild -p fixtures
bin=$PWD/target/release
work=$(mktemp -d /var/tmp/rbuild-demo.XXXXXX)
export RBUILD_ROOT=$work/store

"$bin/rbuild-fixtures" busybox -o "$work/busybox.tar" --name busybox:demo >/dev/null
"$bin/rbuild" load -i "$work/busybox.tar"

mkdir -p "$work/app"
cat > "$work/app/Dockerfile" <<'DOCKERFILE'
FROM busybox:demo AS build
WORKDIR /src
COPY hello.txt .
RUN --mount=type=cache,target=/cache \
    tr a-z A-Z < hello.txt > shout.txt && date > /cache/last-build
FROM busybox:demo
COPY --from=build /src/shout.txt /srv/
CMD ["cat", "/srv/shout.txt"]
DOCKERFILE
echo "hello from rbuild" > "$work/app/hello.txt"

"$bin/rbuild" -t demo-app:1 "$work/app"
echo "--- rebuilt with no change (every step CACHED):"
"$bin/rbuild" -t demo-app:1 "$work/app" 2>&1 | grep -c CACHED
"$bin/rbuild" images
"$bin/rbuild" save --format oci -o "$work/demo-app.oci.tar" demo-app:1
"$bin/rbuild" save --format docker -o "$work/demo-app.docker.tar" demo-app:1

echo "--- running it with docker:"
source scripts/dockerd.sh
trap stop_dockerd EXIT
start_dockerd "$work/dockerd"
/usr/bin/docker load -i "$work/demo-app.docker.tar"
/usr/bin/docker run --rm --network host demo-app:1
echo "demo files are in $work"
