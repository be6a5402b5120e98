# shoal: build, test, demo and benchmark targets.
GO      ?= go
GOBIN   := $(shell $(GO) env GOPATH)/bin
export PATH := $(GOBIN):$(PATH)
BIN     := bin/shoal
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)

.PHONY: all build tools test test-unit test-e2e fuzz lint demo bench bench-quick bench-single bench-p2p bench-fleet bench-sim bench-tracker bench-nodes manifests clean

all: build

build:
	$(GO) build -ldflags "-X main.version=$(VERSION)" -o $(BIN) ./cmd/shoal

# tools installs the third-party programs the end-to-end tests, the demo and the benchmarks
# run for real: the distribution registry, crane, containerd/ctr and the OCI conformance suite.
tools:
	scripts/install-tools.sh

# test runs everything but the benchmarks: unit tests (with the race detector), short fuzz
# runs of the parsers, and the end-to-end tests with real processes.
test: lint test-unit fuzz test-e2e

test-unit:
	$(GO) test -race -count=1 ./...

test-e2e: tools
	cd test && $(GO) test -count=1 -timeout 20m ./...

# Fuzz runs are bounded by a count of inputs, not a duration: a duration stop can fail a clean
# run with "context deadline exceeded" when the deadline catches a worker mid-input. Each
# count takes about 5-10 s on 2 cores.
FUZZ = $(GO) test -run '^$$' -fuzztime
fuzz:
	$(FUZZ) 150000x -fuzz '^FuzzParsePath$$' ./registryapi
	$(FUZZ) 150000x -fuzz '^FuzzParseRange$$' ./registryapi
	$(FUZZ) 30000x -fuzz '^FuzzDecodeRequest$$' ./p2p
	$(FUZZ) 30000x -fuzz '^FuzzReadHave$$' ./p2p
	$(FUZZ) 30000x -fuzz '^FuzzReadChunk$$' ./p2p
	$(FUZZ) 50000x -fuzz '^FuzzBootstrapDNSStatus$$' ./node/fleet
	$(FUZZ) 50000x -fuzz '^FuzzParseImageRef$$' ./node/prefetch/prefetcher

# lint: gofmt, go vet, and golangci-lint (.golangci.yaml: errcheck, staticcheck, unused,
# bodyclose, ineffassign) on both modules; scripts/install-tools.sh installs the pinned version.
lint: tools
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	cd test && $(GO) vet ./...
	golangci-lint run ./...
	cd test && golangci-lint run --config ../.golangci.yaml ./...

demo: tools
	cd test && $(GO) run ./cmd/demo

# bench runs every benchmark; each prints ratios against baselines from the same run, and
# docs/BENCHMARKS.md records the results.
bench: bench-single bench-p2p bench-fleet

# bench-single measures one node against the real registry (origin on loopback, and in a
# network namespace behind a 1 Gbit/s link: needs root).
bench-single: tools
	cd test && $(GO) run ./cmd/bench --json ../bench/results/single-node.json

# bench-p2p measures nodes exchanging blobs: one peer against the origin on loopback and across
# 1 Gbit/s links (needs root), four upload-limited peers, DHT lookups in a 20-node fleet.
bench-p2p: tools
	cd test && $(GO) run ./cmd/bench-p2p --json ../bench/results/p2p.json

# bench-fleet rolls one image out to a fleet of 10 hosts, each a network namespace behind a
# tc-shaped link, with the origin registry behind a slower one: straight from the origin,
# through a central pull-through cache, and through shoal (DHT only, and with a tracker), all
# hosts at once and 10% at a time (needs root; about 11 minutes).
bench-fleet: tools
	cd test && $(GO) run ./cmd/bench-fleet --json ../bench/results/fleet.json --plot ../docs/img/fleet-cdf.png

# bench-quick runs every fleet scenario on 6 hosts and a 32 MiB image, in under 3 minutes.
bench-quick: tools
	cd test && $(GO) run ./cmd/bench-fleet --quick --json ../bench/results/fleet-quick.json --plot ../bench/results/fleet-quick.png

# bench-sim rolls a 1 GiB image out to simulated fleets of 100 and 1,000 nodes (SIM_NODES), each
# node running shoal's own downloader, store, chunk server and tracker client, in virtual time:
# cold, rolling, late joiners, 5% dying, slow nodes; DHT-only and with a tracker.
SIM_NODES ?= 100,1000
bench-sim:
	cd test && $(GO) test -count=1 -timeout 180m -run '^TestBench$$' ./sim -args -sim.nodes $(SIM_NODES) -sim.json ../../bench/results/sim.json -sim.plot ../../docs/img/sim-cdf.png

# bench-tracker loads real `shoal tracker` processes on loopback with the signed announces
# and lease requests of a rollout from 5,000 node identities: open-loop steps at fixed rates
# and a closed-loop maximum, with one, two and three trackers side by side (about 5 minutes).
bench-tracker:
	cd test && $(GO) run ./cmd/bench-tracker --json ../bench/results/tracker.json

# bench-nodes starts 100 real `shoal node` processes on loopback (NODES) and rolls cold
# images out to all of them at once through a rate-limited origin, DHT-only and with a
# tracker, then checks that every node finds the others' blobs in the DHT (about 6 minutes).
NODES ?= 100
bench-nodes: tools
	cd test && $(GO) run ./cmd/bench-nodes --nodes $(NODES) --json ../bench/results/nodes-$(NODES).json

# manifests renders the Helm chart (deploy/helm/shoal) with its default values into the plain
# manifests in deploy/kubernetes; test/deploy checks that they are up to date. Needs helm
# (scripts/install-tools.sh installs it).
manifests:
	deploy/kubernetes/generate.sh deploy/kubernetes

clean:
	rm -rf bin
