#!/usr/bin/env bash
# Builds the pinned MinIO client (mc) once into a versioned cache directory outside the
# repository and prints its path, like minio.sh. deploy/minio_test.go runs deploy/minio/init.sh
# with it against a real MinIO (export LORAFT_MC=$(deploy/mc.sh)); loraft never links mc (AGPL).
#
# Idempotent: when the binary for this version is cached, it prints the path and exits at once.
# Build from cold takes a few minutes and ~1 GB of Go caches.
#
#   LORAFT_CACHE   cache root (default ${XDG_CACHE_HOME:-$HOME/.cache}/loraft)
#   MC_VERSION     module version to build (default: the pinned one below)
set -euo pipefail

MC_VERSION=${MC_VERSION:-v0.0.0-20250313080218-cf909e1063a9}
cache=${LORAFT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/loraft}
dir="$cache/mc/$MC_VERSION"
bin="$dir/mc"

if [ -x "$bin" ]; then
  echo "$bin"
  exit 0
fi

mkdir -p "$dir"
tmp=$(mktemp -d "$dir/.build.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
echo "mc: building github.com/minio/mc@$MC_VERSION into $dir (once per machine, a few minutes)" >&2
GOBIN="$tmp" GOFLAGS=-buildvcs=false go install -ldflags="-s -w" "github.com/minio/mc@$MC_VERSION" >&2
mv "$tmp/mc" "$bin"
echo "$bin"
