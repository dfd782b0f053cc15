#!/usr/bin/env bash
# Regenerates the Go code for every .proto under proto/ with pinned plugin
# versions (make proto). protoc comes from Debian's protobuf-compiler; the Go
# plugins are built once into a versioned cache directory outside the repo.
set -euo pipefail

PROTOC_GEN_GO=v1.36.12      # google.golang.org/protobuf, same as go.mod
PROTOC_GEN_GO_GRPC=v1.6.0   # google.golang.org/grpc/cmd/protoc-gen-go-grpc

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)
cache=${LORAFT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/loraft}
bin="$cache/protoc-plugins/go-$PROTOC_GEN_GO-grpc-$PROTOC_GEN_GO_GRPC"

if ! command -v protoc >/dev/null; then
  sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
  echo "protoc: installing protobuf-compiler (apt)"
  $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends protobuf-compiler >/dev/null
fi
if [ ! -x "$bin/protoc-gen-go" ] || [ ! -x "$bin/protoc-gen-go-grpc" ]; then
  mkdir -p "$bin"
  (cd "${TMPDIR:-/tmp}" && GOFLAGS= GOBIN="$bin" go install "google.golang.org/protobuf/cmd/protoc-gen-go@$PROTOC_GEN_GO" \
    && GOFLAGS= GOBIN="$bin" go install "google.golang.org/grpc/cmd/protoc-gen-go-grpc@$PROTOC_GEN_GO_GRPC")
fi

cd "$root"
mapfile -t protos < <(find proto -name '*.proto' | sort)
PATH="$bin:$PATH" protoc -I proto \
  --go_out=. --go_opt=module=github.com/loraft/loraft \
  --go-grpc_out=. --go-grpc_opt=module=github.com/loraft/loraft \
  "${protos[@]}"
echo "protoc: generated Go for ${#protos[@]} files with $(protoc --version), protoc-gen-go $PROTOC_GEN_GO, protoc-gen-go-grpc $PROTOC_GEN_GO_GRPC"
