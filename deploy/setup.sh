#!/usr/bin/env bash
# One-time (and idempotent) machine set-up for building loraft:
#   1. system packages: g++, and Debian's libtorch-dev + libopenblas0-pthread when
#      neither $LIBTORCH nor a pip PyTorch provides libtorch;
#   2. third_party/gotch: gotch v0.9.1 adapted to the installed libtorch (its C++
#      half moved to csrc/ so it is built as lib/libtch.so, not by cgo);
#      third_party/raft: hashicorp/raft without its testing.go (no test
#      package in the binary);
#   3. lib/libtch.so via deploy/build-shim.sh;
#   4. the pinned MinIO server binary via deploy/minio.sh (tests and demo).
# Each step keeps a stamp of its inputs and rewrites nothing when they did not
# change, so a warm run takes a second or two and Go's build cache stays valid.
#
#   LORAFT_SKIP_MINIO=1  skip step 4
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)
GOTCH_VERSION=v0.9.1
say() { echo "setup: $*"; }

# apt_install PKG...: installs the packages that are missing.
apt_install() {
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  command -v apt-get >/dev/null || { echo "setup: missing ${missing[*]} and no apt-get: install them by hand" >&2; exit 1; }
  local sudo=""
  if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null || { echo "setup: need root to install ${missing[*]}: run 'sudo apt-get install ${missing[*]}'" >&2; exit 1; }
    sudo="sudo"
  fi
  say "installing ${missing[*]} (apt)"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# 1. packages
# shellcheck source=deploy/libtorch.sh
. "$here/libtorch.sh"
command -v g++ >/dev/null || apt_install g++
# Debian's Prometheus server: internal/monitoring's test scrapes a real cluster with it.
apt_install prometheus
# Debian's chromium: cmd/loraft's browser test drives the dashboard with it, headless.
apt_install chromium
# Debian's hey load generator: `make bench-serve` drives `loraft serve` with it.
apt_install hey
if ! libtorch_detect; then
  apt_install libtorch-dev libopenblas0-pthread
  libtorch_detect || { echo "setup: libtorch-dev installed but not found" >&2; exit 1; }
fi
# The reference BLAS that libtorch-dev pulls in is ~30x slower than OpenBLAS.
[ "$TORCH_SOURCE" = debian ] && apt_install libopenblas0-pthread
say "libtorch $TORCH_VERSION from $TORCH_SOURCE ($TORCH_LIB), C++11 ABI $TORCH_ABI, CUDA $TORCH_CUDA"

# 2. third_party/gotch
dest="$root/third_party/gotch"
stamp=$(cat "$0" "$here"/gotch/* | sha256sum | cut -d' ' -f1)
stamp="$GOTCH_VERSION $stamp"
if [ "$(cat "$dest/.loraft-stamp" 2>/dev/null)" != "$stamp" ]; then
  say "generating third_party/gotch from github.com/sugarme/gotch@$GOTCH_VERSION"
  # Outside the module: its go.mod replaces gotch with the folder being made.
  moddir=$(cd "${TMPDIR:-/tmp}" && GOFLAGS= GO111MODULE=on go mod download -json "github.com/sugarme/gotch@$GOTCH_VERSION" | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')
  [ -d "$moddir/libtch" ] || { echo "setup: go mod download of gotch@$GOTCH_VERSION failed" >&2; exit 1; }
  tmp="$root/third_party/.gotch.tmp"
  rm -rf "$tmp"; mkdir -p "$tmp"
  cp -r "$moddir"/. "$tmp/"
  chmod -R u+w "$tmp"
  rm -rf "$tmp/example" "$tmp/gen" "$tmp/libtch/lib.go"
  # The C++ half leaves the Go package (cgo would compile it) for csrc/.
  mkdir -p "$tmp/csrc"
  mv "$tmp"/libtch/*.cpp "$tmp"/libtch/*.cpp.h "$tmp"/libtch/stb_*.h "$tmp/csrc/"
  # torch_last_err is defined in a header that every generated part includes:
  # declare it there, define it once (build-shim.sh appends the definition).
  sed -i 's/^thread_local char \*torch_last_err = nullptr;/extern thread_local char *torch_last_err;/' "$tmp/libtch/torch_api.h"
  grep -q '^extern thread_local char \*torch_last_err;' "$tmp/libtch/torch_api.h" || { echo "setup: torch_api.h no longer has the torch_last_err line to patch" >&2; exit 1; }
  cp "$tmp"/libtch/torch_api.h "$tmp"/libtch/torch_api_generated.h "$here/gotch/loraft_ext.cpp" "$tmp/csrc/"
  # Two memory bugs in gotch's generated ops (upstream issue #132 and
  # kin), fixed here because a training job runs for hours:
  #  - every op passes C.malloc(0) as its output array and never frees it
  #    (and ops with several outputs write past it): allocate room for 16
  #    outputs and free it when the op returns;
  #  - in-place ops replace the tensor's handle without freeing the old one,
  #    which keeps the old handle's storage alive forever (a leak of a whole
  #    tensor for every in-place op on a temporary): free the old handle.
  gen="$tmp/ts/tensor-generated.go"
  sed -i \
    -e 's|^  ptr := (\*lib.Ctensor)(unsafe.Pointer(C.malloc(0)))$|  ptr := (*lib.Ctensor)(unsafe.Pointer(C.malloc(128)))\n  defer C.free(unsafe.Pointer(ptr))|' \
    -e 's|^  ctensorPtr0 := (\*lib.Ctensor)(unsafe.Pointer(C.malloc(0)))$|  ctensorPtr0 := (*lib.Ctensor)(unsafe.Pointer(C.malloc(128)))\n  defer C.free(unsafe.Pointer(ctensorPtr0))|' \
    -e 's|^  ts.ctensor = \*ptr$|  lib.AtFree(ts.ctensor)\n  ts.ctensor = *ptr|' "$gen"
  if grep -q 'C.malloc(0)' "$gen" || ! grep -q 'lib.AtFree(ts.ctensor)' "$gen"; then
    echo "setup: the leak patch no longer matches gotch's generated ops ($gen)" >&2; exit 1
  fi
  #  - Scalar.Drop is a no-op (scalars wait for a finalizer): make it free the
  #    C scalar once, and make the finalizer skip a dropped one.
  sc="$tmp/ts/scalar.go"
  sed -i \
    -e '/^func (sc \*Scalar) Drop() (err error) {$/,/^}$/c\
func (sc *Scalar) Drop() (err error) {\
	if sc == nil || sc.cscalar == nil {\
		return nil\
	}\
	runtime.SetFinalizer(sc, nil)\
	err = freeCScalar(sc)\
	sc.cscalar = nil\
	return err\
}' \
    -e '/^func (sc \*Scalar) MustDrop() {$/,/^}$/c\
func (sc *Scalar) MustDrop() {\
	if err := sc.Drop(); err != nil {\
		log.Fatal(err)\
	}\
}' \
    -e 's|^func freeCScalar(x \*Scalar) error {$|func freeCScalar(x *Scalar) error {\n\tif x == nil \|\| x.cscalar == nil {\n\t\treturn nil\n\t}|' "$sc"
  if ! grep -q 'sc.cscalar = nil' "$sc" || ! grep -q 'x.cscalar == nil' "$sc"; then
    echo "setup: the scalar patch no longer matches gotch's ts/scalar.go" >&2; exit 1
  fi
  #  - newTensor gives every tensor wrapper a zeroed 100 KB Go struct as
  #    ballast, so that garbage tensors push the Go GC to run their
  #    finalizers. loraft drops its tensors itself (graph.Graph owns each
  #    computation's), so the ballast only cost time: an op took 27 µs from
  #    Go against 2.1 µs from C++, 2.6 µs without it (10x; a bert-tiny step
  #    3-15% faster, the Go heap 17 -> 3 MB, no RSS growth over 2,200 steps).
  sed -i 's|^\tx.d = new(bigStruct)$|\t// loraft: no 100 KB ballast per tensor (deploy/setup.sh)|' "$tmp/ts/tensor.go"
  if grep -q 'x.d = new(bigStruct)' "$tmp/ts/tensor.go" || ! grep -q 'no 100 KB ballast' "$tmp/ts/tensor.go"; then
    echo "setup: the ballast patch no longer matches gotch's ts/tensor.go" >&2; exit 1
  fi
  cp "$here/gotch/lib.go.in" "$tmp/libtch/lib.go"
  sed "s/@GOTCH_VERSION@/$GOTCH_VERSION/" "$here/gotch/loraft.go.in" > "$tmp/libtch/loraft.go"
  cat > "$tmp/LORAFT.md" <<MD
# Adapted gotch (generated by deploy/setup.sh; do not edit, do not commit)

Source: github.com/sugarme/gotch@$GOTCH_VERSION without example/ and gen/.
Changes: libtch's C++ (torch_api.cpp, torch_api_generated.cpp.h, stb_*.h) moved to
csrc/ and built into lib/libtch.so by deploy/build-shim.sh; libtch/lib.go links
that library; libtch/loraft.go and csrc/loraft_ext.cpp add thread, version and
stub queries; torch_last_err is declared extern in torch_api.h; ts/tensor-generated.go
frees each op's output array and, for in-place ops, the replaced handle, and ts/scalar.go's
Scalar.Drop frees its C scalar (memory leaks); ts/tensor.go gives tensors no 100 KB Go ballast. Ops the
installed libtorch lacks are listed in STUBBED_OPS.txt.
MD
  echo "$stamp" > "$tmp/.loraft-stamp"
  rm -rf "$dest"
  mv "$tmp" "$dest"
fi

# 2b. third_party/raft: hashicorp/raft as go.mod requires it, without its
# testing.go, the one non-test file of raft that imports "testing" (its
# in-memory cluster helpers), so the shipped binary links no test package.
RAFT_VERSION=$(sed -n 's/^[[:space:]]*github.com\/hashicorp\/raft \(v[^[:space:]]*\).*/\1/p' "$root/go.mod")
[ -n "$RAFT_VERSION" ] || { echo "setup: go.mod does not require github.com/hashicorp/raft" >&2; exit 1; }
rdest="$root/third_party/raft"
rstamp="$RAFT_VERSION $(sha256sum "$0" | cut -d' ' -f1)"
if [ "$(cat "$rdest/.loraft-stamp" 2>/dev/null)" != "$rstamp" ]; then
  say "generating third_party/raft from github.com/hashicorp/raft@$RAFT_VERSION (without testing.go)"
  rmod=$(cd "${TMPDIR:-/tmp}" && GOFLAGS= GO111MODULE=on go mod download -json "github.com/hashicorp/raft@$RAFT_VERSION" | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')
  [ -f "$rmod/raft.go" ] || { echo "setup: go mod download of hashicorp/raft@$RAFT_VERSION failed" >&2; exit 1; }
  rtmp="$root/third_party/.raft.tmp"
  rm -rf "$rtmp"; mkdir -p "$rtmp"
  # The package itself only: its tests, fuzzy/ and bench/ need testing.go.
  find "$rmod" -maxdepth 1 -type f \( -name '*.go' -o -name go.mod -o -name go.sum -o -name LICENSE \) \
    ! -name '*_test.go' ! -name testing.go -exec cp {} "$rtmp/" \;
  chmod -R u+w "$rtmp"
  printf '%s\n' "# hashicorp/raft@$RAFT_VERSION without testing.go (generated by deploy/setup.sh; do not edit, do not commit)" > "$rtmp/LORAFT.md"
  echo "$rstamp" > "$rtmp/.loraft-stamp"
  rm -rf "$rdest"
  mv "$rtmp" "$rdest"
fi

# 3. the shim
"$here/build-shim.sh" --src "$dest/csrc" --out "$root/lib"
cmp -s "$root/lib/libtch-stubbed-ops.txt" "$dest/STUBBED_OPS.txt" 2>/dev/null || cp "$root/lib/libtch-stubbed-ops.txt" "$dest/STUBBED_OPS.txt"

# 4. MinIO
if [ "${LORAFT_SKIP_MINIO:-}" != 1 ]; then
  say "minio server: $("$here/minio.sh")"
fi
