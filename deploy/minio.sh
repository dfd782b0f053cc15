#!/usr/bin/env bash
# Builds the pinned MinIO server once into a versioned cache directory outside
# the repository and prints its path. MinIO is AGPL: loraft never links or
# imports it; it only runs the server binary as a separate process (tests, demo).
#
# Idempotent: when the binary for this version is cached, it prints the path and
# exits in milliseconds. Build from cold takes ~10 minutes and ~2 GB of Go caches.
#
#   LORAFT_CACHE   cache root (default ${XDG_CACHE_HOME:-$HOME/.cache}/loraft)
#   MINIO_VERSION  module version to build (default: the pinned one below)
set -euo pipefail

MINIO_VERSION=${MINIO_VERSION:-v0.0.0-20260212201848-7aac2a2c5b7c}
cache=${LORAFT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/loraft}
dir="$cache/minio/$MINIO_VERSION"
bin="$dir/minio"

if [ -x "$bin" ]; then
  echo "$bin"
  exit 0
fi

mkdir -p "$dir"
tmp=$(mktemp -d "$dir/.build.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
echo "minio: building github.com/minio/minio@$MINIO_VERSION into $dir (once per machine, ~10 min)" >&2
# GOBIN into a temp dir, then rename: an interrupted build never leaves a
# half-written binary at the cached path.
GOBIN="$tmp" GOFLAGS=-buildvcs=false go install -ldflags="-s -w" "github.com/minio/minio@$MINIO_VERSION" >&2
mv "$tmp/minio" "$bin"
echo "$bin"
