# The few verbs people type. Every target installs the Debian packages it needs when missing.
SHELL := /bin/bash
.DEFAULT_GOAL := build

# Build and runtime packages; docker.io and busybox-static serve the tests that need a real dockerd.
BUILD_PACKAGES := libbpf-dev libelf-dev zlib1g-dev libcurl4-openssl-dev libzstd-dev pkg-config bpftool
TEST_PACKAGES := docker.io docker-compose busybox-static debootstrap iproute2 nftables zstd python3 python3-venv curl openssl
# The ECS definitions are checked against the ECS API model and cfn-lint, pinned so that a new lint
# rule cannot fail the tests with no change here. grpcio-tools brings protoc: `make proto`, and the
# test that decodes an intake message with it.
PYTHON_PACKAGES := botocore==1.43.11 cfn-lint==1.51.0 grpcio-tools==1.85.1

.PHONY: deps test-deps python-deps bpf proto build release run test fuzz fuzz-ci fmt lint bench bench-quick bench-deps bench-modes bench-collection bench-collection-cost collection-bench bench-encode bench-api bench-unit soak clean

# The eBPF programs: compiled with the Swift toolchain's clang (it has the BPF target), linked into one
# object, and turned by bpftool into a libbpf skeleton that embeds it (Sources/CBPF/cnm.skel.h,
# generated, not committed): maps, programs and read-only globals by name.
CLANG ?= $(shell dirname "$$(command -v swift)")/clang
BPF_SOURCES := $(wildcard bpf/*.bpf.c)
BPF_HEADERS := $(wildcard bpf/*.h)
BPF_BUILD := .build/bpf
BPF_OBJECT := $(BPF_BUILD)/cnm.bpf.o
BPF_SKELETON := Sources/CBPF/cnm.skel.h
# Where Debian keeps the architecture's kernel headers (asm/); gcc may be absent in a build image.
MULTIARCH ?= $(shell gcc -print-multiarch 2>/dev/null || echo "$$(uname -m)-linux-gnu")

deps:
	@scripts/apt-ensure.sh $(BUILD_PACKAGES)

test-deps: deps
	@scripts/apt-ensure.sh $(TEST_PACKAGES)
	@$(MAKE) --no-print-directory python-deps

python-deps:
	@scripts/apt-ensure.sh python3 python3-venv
	@.build/python/bin/python3 -c 'import botocore, cfnlint, grpc_tools' 2>/dev/null || \
		{ python3 -m venv .build/python && .build/python/bin/pip install -q --disable-pip-version-check $(PYTHON_PACKAGES); }

# The intake's payload types: Sources/CNMIntakeProto/cnm_connections.pb.swift is generated from
# proto/cnm_connections.proto and committed, so builds need neither protoc nor the plugin. After a
# change to the .proto, `make proto` builds swift-protobuf's protoc-gen-swift (the version the package
# depends on, once, into .build-protoc-gen) and regenerates with protoc from grpcio-tools.
SWIFT_PROTOBUF_VERSION := 1.39.0
SWIFT_PROTOBUF_GIT ?= https://github.com/apple/swift-protobuf.git
PROTOC_GEN_SWIFT := .build-protoc-gen/swift-protobuf-$(SWIFT_PROTOBUF_VERSION)/.build/release/protoc-gen-swift

$(PROTOC_GEN_SWIFT):
	rm -rf .build-protoc-gen/swift-protobuf-$(SWIFT_PROTOBUF_VERSION)
	git clone -q --depth 1 --branch $(SWIFT_PROTOBUF_VERSION) $(SWIFT_PROTOBUF_GIT) \
		.build-protoc-gen/swift-protobuf-$(SWIFT_PROTOBUF_VERSION)
	cd .build-protoc-gen/swift-protobuf-$(SWIFT_PROTOBUF_VERSION) && swift build -c release --product protoc-gen-swift

proto: python-deps $(PROTOC_GEN_SWIFT)
	.build/python/bin/python3 -m grpc_tools.protoc --plugin=protoc-gen-swift=$(PROTOC_GEN_SWIFT) \
		--swift_opt=Visibility=Public --swift_out=Sources/CNMIntakeProto -Iproto proto/cnm_connections.proto

$(BPF_BUILD)/%.bpf.o: bpf/%.bpf.c $(BPF_HEADERS)
	@mkdir -p $(BPF_BUILD)
	$(CLANG) -target bpf -D__TARGET_ARCH_x86 -I/usr/include/$(MULTIARCH) -Ibpf \
		-g -O2 -Wall -Werror -c $< -o $@

$(BPF_OBJECT): $(patsubst bpf/%.bpf.c,$(BPF_BUILD)/%.bpf.o,$(BPF_SOURCES))
	bpftool gen object $@ $^

# CBPF.c is touched so that a build made before the skeleton existed compiles it again: its
# __has_include is not among the dependencies the build tracks.
$(BPF_SKELETON): $(BPF_OBJECT)
	bpftool gen skeleton $< name cnm > $@.tmp && mv $@.tmp $@
	touch Sources/CBPF/CBPF.c

bpf: deps
	@$(MAKE) --no-print-directory $(BPF_SKELETON)

build: bpf
	swift build

release: bpf
	swift build -c release --static-swift-stdlib --product cnm-agent

# Runs the agent on this host (as root: it reads every process's sockets).
run: release
	.build/release/cnm-agent

# Every test: unit tests, real-kernel tests and the tests against a real dockerd.
test: test-deps
	scripts/start-dockerd.sh
	scripts/build-test-images.sh
	$(MAKE) --no-print-directory bpf
	swift build
	swift test --no-parallel
	$(MAKE) --no-print-directory bench-unit

# libFuzzer over every parser of outside data (scripts/fuzz.sh, targets in Sources/CNMFuzzTargets), each
# target for FUZZ_SECONDS; fuzz-ci: 15 s each (5 minutes on 2 cores, the sanitized build from scratch). A
# crash or timeout fails it, its input saved in Fuzz/crashes/<target>/; once fixed, the input goes to
# Fuzz/regressions/<target>/, which `swift test` replays.
FUZZ_SECONDS ?= 60
fuzz: deps
	@scripts/apt-ensure.sh python3 zstd
	FUZZ_SECONDS=$(FUZZ_SECONDS) scripts/fuzz.sh

fuzz-ci: deps
	@scripts/apt-ensure.sh python3 zstd
	FUZZ_SECONDS=15 scripts/fuzz.sh

fmt:
	swift format -i -r Package.swift Sources Tests Fuzz Benchmarks

lint:
	swift format lint --strict -r Package.swift Sources Tests Fuzz Benchmarks
	swift package describe --type json | python3 scripts/check-targets.py

# Overhead, accuracy and scale against pmacctd and bpftrace, every workload and collector side by side
# (scripts/bench/bench.py; about 11 minutes on 2 cores): results in .build/bench, published to
# BENCHMARKS.md and docs/bench.png. bench-quick: a small subset for CI (under 2 minutes; its exit
# status says whether the harness works, not whether the numbers are good).
BENCH_PACKAGES := pmacct bpftrace python3 python3-matplotlib gcc busybox-static docker.io
bench-deps:
	@scripts/apt-ensure.sh $(BENCH_PACKAGES)

bench: release collection-bench bench-deps
	scripts/start-dockerd.sh
	scripts/build-test-images.sh
	/usr/bin/python3 scripts/bench/bench.py --publish

bench-quick: release collection-bench bench-deps
	/usr/bin/python3 scripts/bench/bench.py --quick

# What each collection mode costs: the agent's CPU per 1,000 short connections and per GiB, the run
# time of its eBPF programs and its RSS with 10,000 held connections (scripts/bench/bench.py --modes;
# knobs as flags, or MODES, CONNECTIONS, INTERVAL, SAMPLE, IDLE_SECONDS, SHORT, BULK_BYTES).
bench-modes: release
	@scripts/apt-ensure.sh python3 gcc iproute2
	/usr/bin/python3 scripts/bench/bench.py --modes

# What a read of /api/v1/connections costs the agent with 5,000 held connections, and 20 concurrent
# readers (scripts/api-read-cost.py; CNM_AGENT=path measures another build).
bench-api: release
	@scripts/apt-ensure.sh python3 gcc
	/usr/bin/python3 scripts/api-read-cost.py

# CPU to encode one interval per output format, per 10,000 connections (Benchmarks/EncodeCost;
# ENCODE_CONNECTIONS, ENCODE_RUNS).
ENCODE_CONNECTIONS ?= 10000
ENCODE_RUNS ?= 21
# eBPF mode's user-space cost per closed connection: decoding its two ring-buffer records, folding
# them into the interval and grouping the report (Benchmarks/CollectionCost): the median thread CPU
# of COLLECTION_RUNS runs of COLLECTION_FLOWS connections. make bench reads its instruction count
# under callgrind.
COLLECTION_FLOWS ?= 20000
COLLECTION_RUNS ?= 7
collection-bench: bpf
	swift build -c release --product cnm-collection-bench

bench-collection-cost: collection-bench
	$$(swift build -c release --show-bin-path)/cnm-collection-bench $(COLLECTION_FLOWS) $(COLLECTION_RUNS)

bench-encode: bpf
	swift build -c release --product cnm-encode-bench
	$$(swift build -c release --show-bin-path)/cnm-encode-bench $(ENCODE_CONNECTIONS) $(ENCODE_RUNS)

# CPU per collection and RSS with 10,000 open loopback TCP connections (the former `make bench`;
# scripts/bench/bench.py --collection; CONNECTIONS, WINDOW_SECONDS).
bench-collection: release
	@scripts/apt-ensure.sh python3
	/usr/bin/python3 scripts/bench/bench.py --collection

# The benchmark harness's own unit tests (accuracy, parsing of the collectors' output, the report table):
# the standard library's unittest, no root, no agent.
bench-unit:
	@scripts/apt-ensure.sh python3
	python3 -m unittest discover -s scripts/bench/tests -t scripts/bench

# Stability under hours of churn (not in CI): 1,000 connections/s, 20,000 held, a container started
# and stopped every second and two API readers, sampled every minute (scripts/soak.py); each mode
# writes its section of docs/soak.md. SOAK_MINUTES (default 30) per mode, SOAK_MODES.
SOAK_MINUTES ?= 30
SOAK_MODES ?= ebpf ebpfless
soak: release
	@scripts/apt-ensure.sh python3 gcc docker.io
	scripts/start-dockerd.sh
	scripts/build-test-images.sh
	status=0; for mode in $(SOAK_MODES); do \
		/usr/bin/python3 scripts/soak.py --mode $$mode --minutes $(SOAK_MINUTES) || status=1; \
	done; exit $$status

clean:
	rm -rf .build
