#!/usr/bin/env bash
# Installs what rbuild's tests, benchmarks and demo need on Debian 12, as root.
# The real peers the tests talk to come from Debian's packages; none are mocked.
set -euo pipefail

packages=(
  docker.io            # dockerd + /usr/bin/docker 20.10 (BuildKit built in)
  containerd           # containerd + ctr (pulls through the mirror with hosts.toml)
  skopeo umoci runc crun podman buildah
  docker-registry      # CNCF distribution 2.8
  busybox-static       # the busybox fixture base image
  debootstrap          # the Debian fixture base image
  pigz zstd hyperfine wrk bc   # benchmark peers and drivers
  uidmap iproute2 curl ca-certificates git
  openssh-client       # ssh, ssh-agent and ssh-add for the RUN --mount=type=ssh and ADD-over-ssh tests
  dropbear-bin         # the ssh server of the ADD-over-ssh test (binaries only: no service starts)
  apache2-utils openssl # htpasswd (bcrypt) and test keys for the registry auth tests
  python3 python3-pip  # moto, the S3 server of the registry's S3 tests and benchmark (below)
  qemu-system-x86 gcc libc6-dev # the pure cgroup-v2 VM test; a static probe for the seccomp test
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

# moto's server mode (PyPI `moto[server]`): the S3-compatible server the S3 backend's tests and
# bench/registry-s3.sh start on a loopback port. Debian's own python3 refuses a plain pip
# install into the system (PEP 668), hence the fallback.
if ! python3 -c 'import moto.server, flask' 2>/dev/null; then
  python3 -m pip install -q 'moto[server]>=5,<6' 2>/dev/null \
    || python3 -m pip install -q --break-system-packages 'moto[server]>=5,<6'
fi

# The Debian kernel the cgroup-v2 VM test boots (runtime-exec/tests/cgroup_v2_vm.rs).
bash "$(dirname "$0")/fetch-vm-kernel.sh"

if ! command -v cargo >/dev/null; then
  echo "cargo is missing: install a Rust toolchain (1.85 or newer), e.g. with rustup" >&2
  exit 1
fi
