#!/usr/bin/env bash
# Builds the agent image from docker/Dockerfile on the local stand-ins for its base images
# (scripts/build-base-images.sh), as the tests run it. Docker's layer cache makes a rebuild with
# unchanged sources take seconds.
#
#   scripts/build-agent-image.sh [TAG]     (default cnm-agent:test)
set -euo pipefail
cd "$(dirname "$0")/.."
TAG=${1:-cnm-agent:test}

scripts/build-base-images.sh
# The host network: the daemon here runs without iptables, so bridged build steps have no route to
# the Debian mirror that apt-get uses.
docker build --network host -f docker/Dockerfile \
    --build-arg SWIFT_IMAGE=cnm-base/swift:bookworm \
    --build-arg RUNTIME_IMAGE=cnm-base/debian:bookworm \
    -t "$TAG" .
