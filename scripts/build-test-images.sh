#!/usr/bin/env bash
# Builds the images the tests run, from Debian packages only: no image registry is reachable here.
# Idempotent: an image that already exists is left as it is.
set -euo pipefail

BUSYBOX_IMAGE=cnm-test/busybox:latest

if ! docker info >/dev/null 2>&1; then
    echo "build-test-images.sh: dockerd does not answer; run scripts/start-dockerd.sh first" >&2
    exit 1
fi

if docker image inspect "$BUSYBOX_IMAGE" >/dev/null 2>&1; then
    echo "$BUSYBOX_IMAGE already exists"
    exit 0
fi

# The static busybox needs no libraries, so one binary and its applet links make a whole image.
BUSYBOX=/bin/busybox
status=$(dpkg-query -W -f='${Status}' busybox-static 2>/dev/null || true)
if [[ $status != *"ok installed"* ]]; then
    echo "build-test-images.sh: busybox-static is not installed (apt-get install -y busybox-static)" >&2
    exit 1
fi

rootfs=$(mktemp -d)
trap 'rm -rf "$rootfs"' EXIT
mkdir -p "$rootfs"/{bin,etc,tmp,proc,sys,dev}
cp "$BUSYBOX" "$rootfs/bin/busybox"
# Applet links relative to /bin, so they resolve inside the container, not on the host.
for applet in $("$BUSYBOX" --list); do
    [[ $applet == busybox ]] || ln -s busybox "$rootfs/bin/$applet"
done
chmod 1777 "$rootfs/tmp"

tar -C "$rootfs" -c . | docker import \
    --change 'ENV PATH=/bin' \
    --change 'CMD ["sh"]' \
    - "$BUSYBOX_IMAGE" >/dev/null
echo "built $BUSYBOX_IMAGE"
