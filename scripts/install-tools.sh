#!/usr/bin/env bash
# Installs the third-party programs the end-to-end tests, the benchmark and the demo run:
# the CNCF distribution registry, crane, the OCI distribution-spec conformance suite, helm,
# golangci-lint (all with `go install` into $(go env GOPATH)/bin) and containerd with ctr (Debian package).
# Safe to run again: a tool already installed at the pinned version is left alone.
set -euo pipefail

REGISTRY_PKG=github.com/distribution/distribution/v3/cmd/registry
REGISTRY_VERSION=v3.1.2
CRANE_PKG=github.com/google/go-containerregistry/cmd/crane
CRANE_VERSION=v0.22.1
CONFORMANCE_PKG=github.com/opencontainers/distribution-spec/conformance
CONFORMANCE_VERSION=v0.0.0-20260831232431-97274622c111
HELM_PKG=helm.sh/helm/v3/cmd/helm
HELM_VERSION=v3.22.0
GOLANGCI_PKG=github.com/golangci/golangci-lint/v2/cmd/golangci-lint
GOLANGCI_VERSION=v2.15.0

command -v go >/dev/null || { echo "install-tools: go is not installed" >&2; exit 1; }
GOBIN_DIR="$(go env GOBIN)"
[ -n "$GOBIN_DIR" ] || GOBIN_DIR="$(go env GOPATH)/bin"

# go_tool NAME PACKAGE VERSION: installs PACKAGE@VERSION unless $GOBIN_DIR/NAME was already
# built from that exact version.
go_tool() {
	local name=$1 pkg=$2 version=$3 bin="$GOBIN_DIR/$1"
	if [ -x "$bin" ] && go version -m "$bin" 2>/dev/null |
		awk -v p="$pkg" -v v="$version" '$1 == "path" && $2 == p { path = 1 } $1 == "mod" && $3 == v { mod = 1 } END { exit !(path && mod) }'; then
		echo "$name $version: already installed at $bin"
		return
	fi
	# Run outside any module and drop GOFLAGS (it may carry -mod=... or other flags that
	# `go install pkg@version` rejects); -buildvcs=false is harmless and kept explicit.
	(cd / && env -u GOFLAGS GOWORK=off GOBIN="$GOBIN_DIR" go install -buildvcs=false "$pkg@$version")
	echo "$name $version: installed at $bin"
}

go_tool registry "$REGISTRY_PKG" "$REGISTRY_VERSION"
go_tool crane "$CRANE_PKG" "$CRANE_VERSION"
go_tool conformance "$CONFORMANCE_PKG" "$CONFORMANCE_VERSION"
go_tool helm "$HELM_PKG" "$HELM_VERSION"
go_tool golangci-lint "$GOLANGCI_PKG" "$GOLANGCI_VERSION"

if command -v containerd >/dev/null && command -v ctr >/dev/null; then
	echo "containerd $(containerd --version | awk '{print $3}') (with ctr): already installed at $(command -v containerd)"
else
	SUDO=""
	[ "$(id -u)" -eq 0 ] || SUDO=sudo
	$SUDO apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends containerd >/dev/null
	echo "containerd $(containerd --version | awk '{print $3}') (with ctr): installed at $(command -v containerd)"
fi

case ":$PATH:" in
*":$GOBIN_DIR:"*) ;;
*) echo "note: add $GOBIN_DIR to PATH" >&2 ;;
esac
