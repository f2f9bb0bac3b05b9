#!/usr/bin/env bash
# Fetches the Debian cloud kernel that runtime-exec's pure cgroup-v2 test boots in a small
# qemu VM (runtime-exec/tests/cgroup_v2_vm.rs), and unpacks it with its modules into
#   ${RBUILD_VM_CACHE:-/var/cache/rbuild-vm}/kernel/{vmlinuz,modules/}
# Idempotent: does nothing when the kernel is already there. Needs apt (no root for
# `apt-get download`, but the default cache directory is under /var). Called by
# scripts/install-deps.sh.
set -euo pipefail

CACHE=${RBUILD_VM_CACHE:-/var/cache/rbuild-vm}
DEST=$CACHE/kernel
[ -f "$DEST/vmlinuz" ] && [ -d "$DEST/modules" ] && exit 0

# The metapackage names the current ABI's image, e.g. linux-image-6.1.0-56-cloud-amd64.
package=$(apt-cache depends linux-image-cloud-amd64 2>/dev/null |
    sed -n 's/^ *Depends: \(linux-image-[0-9].*-cloud-amd64\)$/\1/p' | head -n 1)
if [ -z "$package" ]; then
    echo "fetch-vm-kernel: apt knows no linux-image-cloud-amd64 (run apt-get update)" >&2
    exit 1
fi

mkdir -p "$CACHE"
work=$(mktemp -d "$CACHE/.fetch.XXXXXX")
chmod 755 "$work" # apt-get download runs as _apt and writes here
trap 'rm -rf "$work"' EXIT
(cd "$work" && apt-get download -qq "$package")
dpkg-deb -x "$work"/"$package"_*.deb "$work/x"
release=${package#linux-image-}
mkdir -p "$work/kernel"
cp "$work/x/boot/vmlinuz-$release" "$work/kernel/vmlinuz"
mv "$work/x/lib/modules/$release" "$work/kernel/modules"
echo "$release" >"$work/kernel/release"
# Nothing half-written is visible: the directory appears complete or not at all.
rm -rf "$DEST"
mv "$work/kernel" "$DEST"
echo "fetch-vm-kernel: $package in $DEST" >&2
