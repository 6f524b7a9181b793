# The few verbs people type. Every target installs the Debian packages it needs when missing.
SHELL := /bin/bash
.DEFAULT_GOAL := build

# Build and runtime packages; docker.io and busybox-static serve the tests that need a real dockerd.
BUILD_PACKAGES := libbpf-dev libelf-dev libcurl4-openssl-dev pkg-config
TEST_PACKAGES := docker.io busybox-static iproute2 nftables zstd python3 curl

.PHONY: deps test-deps build release run test fmt lint bench clean

deps:
	@scripts/apt-ensure.sh $(BUILD_PACKAGES)

test-deps: deps
	@scripts/apt-ensure.sh $(TEST_PACKAGES)

build: deps
	swift build

release: deps
	swift build -c release --static-swift-stdlib

# Runs the agent on this host (as root: it reads every process's sockets).
run: release
	.build/release/cnm-agent

# Every test: unit tests, real-kernel tests and the tests against a real dockerd.
test: test-deps
	scripts/start-dockerd.sh
	scripts/build-test-images.sh
	swift build
	swift test --no-parallel

fmt:
	swift format -i -r Package.swift Sources Tests

lint:
	swift format lint --strict -r Package.swift Sources Tests

# CPU per collection and RSS with 10,000 open loopback TCP connections.
bench: release
	scripts/bench-collection.sh

clean:
	rm -rf .build
