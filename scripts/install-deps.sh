#!/usr/bin/env bash
# Installs what rbuild's tests, benchmarks and demo need on Debian 12, as root.
# The real peers the tests talk to come from Debian's packages; none are mocked.
set -euo pipefail

packages=(
  docker.io            # dockerd + /usr/bin/docker 20.10 (BuildKit built in)
  skopeo umoci runc crun podman buildah
  docker-registry      # CNCF distribution 2.8
  busybox-static       # the busybox fixture base image
  debootstrap          # the Debian fixture base image
  pigz zstd hyperfine wrk bc   # benchmark peers and drivers
  uidmap iproute2 curl ca-certificates git
  apache2-utils openssl # htpasswd (bcrypt) and test keys for the registry auth tests
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null; then
  echo "cargo is missing: install a Rust toolchain (1.85 or newer), e.g. with rustup" >&2
  exit 1
fi
