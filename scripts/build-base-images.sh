#!/usr/bin/env bash
# Makes local stand-ins for the agent image's two public base images, since no registry is
# reachable here: a Debian bookworm root file system from debootstrap (for the runtime stage), and
# the same with this machine's Swift toolchain and package mirror (for the build stage, standing in
# for swift:6.3-bookworm). Idempotent: an image that exists is kept.
#
#   scripts/build-base-images.sh   →   cnm-base/debian:bookworm, cnm-base/swift:bookworm
set -euo pipefail

DEBIAN_IMAGE=cnm-base/debian:bookworm
SWIFT_IMAGE=cnm-base/swift:bookworm
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
SWIFT_ROOT=$(dirname "$(dirname "$(dirname "$(readlink -f "$(command -v swift)")")")")
# What the Swift toolchain needs to compile and link on Debian (as the official image installs).
SWIFT_DEPENDENCIES=binutils,git,ca-certificates,libc6-dev,libgcc-12-dev,libstdc++-12-dev,libcurl4-openssl-dev,libxml2-dev,libedit2,libsqlite3-0,libncurses6,libpython3.11,zlib1g-dev,pkg-config,tzdata

exists() { docker image inspect "$1" >/dev/null 2>&1; }

scratch=$(mktemp -d /var/tmp/cnm-base.XXXXXX)
trap 'rm -rf "$scratch"' EXIT

# debootstrap into a temporary directory and import it as an image; extra arguments are tar
# arguments adding more files (-C DIR PATH...).
import_rootfs() {
    local image=$1 include=$2
    shift 2
    local rootfs=$scratch/rootfs
    rm -rf "$rootfs" && mkdir -p "$rootfs"
    echo "debootstrap bookworm for $image (from $MIRROR)"
    debootstrap --variant=minbase ${include:+--include="$include"} bookworm "$rootfs" "$MIRROR" >/dev/null
    # apt's lists and caches are not part of an image.
    rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/cache/apt/archives/*.deb
    tar -c --numeric-owner "$@" -C "$rootfs" . | docker import --change 'CMD ["bash"]' \
        --change 'ENV PATH=/opt/swift/usr/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        - "$image" >/dev/null
    echo "built $image"
}

if ! docker info >/dev/null 2>&1; then
    echo "build-base-images.sh: dockerd does not answer; run scripts/start-dockerd.sh first" >&2
    exit 1
fi
command -v debootstrap >/dev/null || { echo "build-base-images.sh: apt-get install -y debootstrap" >&2; exit 1; }

exists "$DEBIAN_IMAGE" || import_rootfs "$DEBIAN_IMAGE" ""

if ! exists "$SWIFT_IMAGE"; then
    # The toolchain goes to /opt/swift, without the debugger and editor tools a build does not run.
    # Packages resolve from this machine's mirror, as git here is told to (url.<mirror>.insteadOf).
    mirror_config=$scratch/config
    mkdir -p "$mirror_config/etc"
    git config --system --get-regexp '^url\.' | while read -r key value; do
        git config --file "$mirror_config/etc/gitconfig" --add "$key" "$value"
    done
    extra=(--exclude '*/lldb*' --exclude '*/liblldb*' --exclude '*/sourcekit*' --exclude '*/libsourcekitd*'
        --exclude '*/clangd' --exclude '*/docc' --exclude '*/swift-format'
        --transform "s,^${SWIFT_ROOT#/},opt/swift," -C / "${SWIFT_ROOT#/}")
    mirrors=$(git config --system --get-regexp '^url\.' | sed -E 's/^url\.(.*)\.insteadof .*/\1/I' | sort -u)
    for m in $mirrors; do
        [[ -d $m ]] && extra+=(-C / "${m#/}")
    done
    [[ -s $mirror_config/etc/gitconfig ]] && extra+=(-C "$mirror_config" etc/gitconfig)
    import_rootfs "$SWIFT_IMAGE" "$SWIFT_DEPENDENCIES" "${extra[@]}"
fi
