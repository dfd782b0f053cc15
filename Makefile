# loraft — every target that needs the machine set up depends on `setup`,
# which is idempotent and takes a second or two once done.
SHELL := bash
.SHELLFLAGS := -euo pipefail -c
GO ?= go
VERSION := $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X main.version=$(VERSION)
# The epoch of bench-trainer's bucketing comparison and bf16 parity: the real validation sample when it is here.
EPOCH_DATA := $(if $(wildcard ../shared/data/combined-val.csv),../shared/data/combined-val.csv,experiments/data/demo.csv)
# MinIO for tests and the demo: path of the cached server binary (deploy/minio.sh).
MINIO = $$(deploy/minio.sh)

.PHONY: all setup build test demo proto lint bench bench-libtorch bench-shard bench-trainer bench-checkpoint bench-allreduce bench-failover bench-dashboard bench-scale bench-serve bench-security chaos gpu-check clean

all: build

## setup: install/adapt libtorch + gotch, build lib/libtch.so and the MinIO binary
setup:
	@deploy/setup.sh

## build: bin/loraft (finds lib/libtch.so through its rpath $$ORIGIN/../lib)
build: setup
	$(GO) build -ldflags "$(LDFLAGS)" -o bin/loraft ./cmd/loraft

## test: the whole suite, with the race detector, against a real MinIO
test: setup
	LORAFT_MINIO=$(MINIO) $(GO) test -race -count=1 -timeout 30m ./...

## demo: the whole job on one machine: `loraft local` runs 3 raft coordinators, 2 trainers and a
## local store, sweeps LoRA rank × alpha on the shipped demo data, prints the results table, pulls the
## best adapter to out/best and classifies a few statements (fresh state each time)
demo: build
	bin/loraft version
	rm -rf out/local out/best
	bin/loraft local --spec experiments/demo.yaml --data experiments/data/demo.csv --trainers 2 \
		--state-dir out/local --out out/best --report out/local/report.json
	bin/loraft plot --report out/local/report.json --out out/local/plots

## proto: regenerate the committed gRPC/protobuf code
proto:
	deploy/protoc.sh

## lint: gofmt, go vet and staticcheck (pinned; installed once into the cache dir, outside the repo)
STATICCHECK_VERSION := v0.8.2
STATICCHECK := $(HOME)/.cache/loraft/staticcheck/$(STATICCHECK_VERSION)/staticcheck
lint: setup
	@bad=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$bad" ]; then echo "not gofmt-ed:"; echo "$$bad"; exit 1; fi
	$(GO) vet ./...
	@[ -x $(STATICCHECK) ] || { echo "lint: installing staticcheck $(STATICCHECK_VERSION) into $(dir $(STATICCHECK))"; \
		GOFLAGS= GOBIN=$(dir $(STATICCHECK)) $(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION); }
	$(STATICCHECK) ./...

## bench: every benchmark; results as JSON under bench/results/
bench: bench-libtorch bench-shard bench-trainer bench-checkpoint bench-allreduce bench-failover bench-dashboard bench-scale bench-serve bench-security

bench-libtorch: build
	bin/loraft bench libtorch --out bench/results/libtorch.json

# Reads ../shared/data (development and CI machines); pass DATA=... elsewhere.
DATA ?= ../shared/data/combined-val.csv
bench-shard: build
	@test -f "$(DATA)" || { echo "bench-shard: $(DATA) not found; run with DATA=path/to/Combined Data.csv"; exit 1; }
	bin/loraft bench shard --data "$(DATA)" --out bench/results/shard.json

clean:
	rm -rf bin

# QLoRA step speed/memory vs PyTorch eager (Debian python3-torch, the same
# libtorch) doing the identical step, and an RSS soak of 2,200 tiny steps; what NF4
# dequantization adds per forward pass; length bucketing; bf16 parity.
bench-trainer: build
	@dpkg-query -W -f='$${Status}' python3-torch 2>/dev/null | grep -q 'install ok installed' || { \
		echo "bench-trainer: installing python3-torch (apt) for the reference"; \
		sudo=""; [ "$$(id -u)" = 0 ] || sudo=sudo; \
		$$sudo apt-get install -y -qq --no-install-recommends python3-torch >/dev/null; }
	bin/loraft bench trainer --out bench/results/trainer.json
	bin/loraft bench dequant --out bench/results/dequant.json
	bin/loraft bench epoch --data $(EPOCH_DATA) --out bench/results/bucketing.json
	bin/loraft bench parity --data $(EPOCH_DATA) --rows 1500 --epochs 4 --lr 3e-3 --out bench/results/bf16_parity.json

# Checkpoint save/load of a bert-base r=8 adapter with AdamW state: local store and MinIO on loopback.
bench-checkpoint: build
	LORAFT_MINIO=$(MINIO) bin/loraft bench checkpoint --out bench/results/checkpoint.json

# Ring all-reduce (ranks as processes) vs naive gather/broadcast vs raw TCP, for 2 and 4 ranks.
bench-allreduce: build
	bin/loraft bench allreduce --out bench/results/allreduce.json

# Coordinator failover: SIGKILL the leader of 3 coordinator processes (default and fast raft
# timeouts) until a new leader reads and schedules again, and heartbeats/s on the leader.
bench-failover: build
	bin/loraft bench failover --out bench/results/failover.json --kills 10

# Scale: 1,000 simulated trainers, 3 coordinator processes, a 10,000-trial sweep launched, listed and deleted
bench-scale: build
	bin/loraft bench scale --out bench/results/scale.json

# First paint of a 100-trial sweep page on loopback (HTML + JSON + scripts and styles, p50 of 20).
bench-dashboard: build
	bin/loraft bench dashboard --out bench/results/dashboard.json

# `loraft serve` processes on loopback under Debian's hey (setup installs it): single-text requests at
# concurrency 1, 8 and 64, dynamic batching on and off, tiny and bert-base random adapters.
bench-serve: build
	bin/loraft bench serve --out bench/results/serve.json

# Issue #12's figures: TestHostileClient's attacks against a real 3-coordinator group (refused, state
# changes, heartbeat p99) and every fuzz target for 15 s. It drives `go test`, so it is a `go run`
# program, not a `loraft bench` subcommand (15 to 25 minutes on 2 cores, mostly compiling the
# packages with fuzzing instrumentation).
bench-security: setup
	$(GO) run -ldflags "$(LDFLAGS)" ./bench/security --go $(GO) --out bench/results/security.json

## chaos: the gray-failure suite (real coordinator, trainer and MinIO processes; paused and
## black-holed processes, store outages): an undisturbed sweep, then the same sweep under each
## fault; results in bench/results/chaos.json. CHAOS_RUNS=5 repeats each scenario,
## CHAOS_SCENARIO=regexp picks some. Not part of `make test` (it takes many minutes).
CHAOS_RUNS ?= 1
CHAOS_SCENARIO ?=
chaos: build
	LORAFT_BIN=$(CURDIR)/bin/loraft LORAFT_MINIO=$(MINIO) $(GO) test -tags chaos -count=1 -timeout 120m -v ./chaos/ \
		-args -runs=$(CHAOS_RUNS) -scenario='$(CHAOS_SCENARIO)' -out=$(CURDIR)/bench/results/chaos.json

## gpu-check: on a CUDA machine without Go (see deploy/gpu-check.sh); not part of `make test`
gpu-check:
	deploy/gpu-check.sh
