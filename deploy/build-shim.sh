#!/usr/bin/env bash
# Builds gotch's C++ half (torch_api.cpp and its generated op wrappers) into
# libtch.so against the libtorch that deploy/libtorch.sh finds, and nothing else:
# no Go toolchain, no network. bin/loraft loads libtch.so through the rpath
# $ORIGIN/../lib, so on a machine with another libtorch (a GPU box with a pip
# PyTorch) running this script once is all a prebuilt bin/loraft needs.
#
# Ops that the installed libtorch lacks or changed fail to compile; each such
# generated function gets a body that sets gotch's last-error string, so calling
# the op from Go returns an error instead of failing the build. The stubbed ops
# are written to libtch-stubbed-ops.txt and compiled into the library
# (loraft_stubbed_ops()).
#
# Usage: deploy/build-shim.sh [--src DIR] [--out DIR]
#   --src  shim sources (default: third_party/gotch/csrc, made by deploy/setup.sh)
#   --out  where libtch.so goes (default: lib/ at the repository root)
#   LIBTORCH=<dir>  build against this libtorch instead of the detected one
#   JOBS=<n>        parallel compile jobs (default: number of CPUs)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)
src="$root/third_party/gotch/csrc"
out="$root/lib"
while [ $# -gt 0 ]; do
  case "$1" in
    --src) src=$(cd "$2" && pwd); shift 2 ;;
    --out) mkdir -p "$2"; out=$(cd "$2" && pwd); shift 2 ;;
    -h|--help) sed -n '2,/^set -e/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "build-shim: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
[ -f "$src/torch_api.cpp" ] || { echo "build-shim: no torch_api.cpp in $src: run 'make setup' first" >&2; exit 1; }

# shellcheck source=deploy/libtorch.sh
. "$here/libtorch.sh"
if ! libtorch_detect; then
  echo "build-shim: no libtorch found: set LIBTORCH=<dir with include/ and lib/>, install a pip PyTorch, or run 'make setup' (Debian libtorch-dev)" >&2
  exit 1
fi
command -v g++ >/dev/null || { echo "build-shim: g++ not found" >&2; exit 1; }

cuda_libs=""
[ "$TORCH_CUDA" = 1 ] && cuda_libs="-ltorch_cuda -lc10_cuda"
cxxflags="-std=c++17 -O1 -fPIC -w -D_GLIBCXX_USE_CXX11_ABI=$TORCH_ABI $TORCH_CXX_INCLUDES"
ldflags="-L$TORCH_LIB -Wl,-rpath,$TORCH_LIB -Wl,--no-undefined -Wl,--no-as-needed -ltorch -ltorch_cpu -lc10 $cuda_libs -Wl,--as-needed"

# The stamp covers every input; when it matches, nothing is rebuilt or rewritten.
stamp=$( {
  cat "$0" "$here/libtorch.sh"
  (cd "$src" && sha256sum ./*)
  echo "$cxxflags $ldflags $TORCH_VERSION"
  stat -L -c '%n %s %Y' "$TORCH_LIB/libtorch_cpu.so" "$TORCH_LIB/libc10.so"
  g++ --version | head -n 1
} | sha256sum | cut -d' ' -f1)
if [ -f "$out/libtch.so" ] && [ "$(cat "$out/libtch.stamp" 2>/dev/null)" = "$stamp" ]; then
  echo "build-shim: $out/libtch.so is up to date (libtorch $TORCH_VERSION, $TORCH_SOURCE)"
  exit 0
fi

jobs=${JOBS:-$(nproc 2>/dev/null || echo 2)}
work=$(mktemp -d "${TMPDIR:-/tmp}/loraft-shim.XXXXXX")
trap 'rm -rf "$work"' EXIT
cp "$src"/* "$work/"
cd "$work"

# Split the 18k lines of generated wrappers at function boundaries so the
# compiler can use every core; each part is its own translation unit.
parts=$(( jobs < 2 ? 2 : (jobs > 8 ? 8 : jobs) ))
awk -v parts="$parts" '
  NR == FNR { if ($0 ~ /^}$/) total++; next }
  FNR == 1 { per = int((total + parts - 1) / parts); part = 0; done = 0; file = "gen_0.cpp.h" }
  { print > file }
  /^}$/ { done++; if (done % per == 0 && part < parts - 1) { close(file); part++; file = "gen_" part ".cpp.h" } }
' torch_api_generated.cpp.h torch_api_generated.cpp.h
for f in gen_*.cpp.h; do printf '#include "torch_api.h"\n#include "%s"\n' "$f" > "${f%.h}"; done
sed -i 's|^#include "torch_api_generated.cpp.h"|// generated wrappers: compiled separately as gen_*.cpp|' torch_api.cpp
printf '\nthread_local char *torch_last_err = nullptr;\n' >> torch_api.cpp
: > stubbed-ops.txt

# stub FILE LINES...: replace the body of each generated function that contains
# one of LINES with one that reports the op as unavailable.
stub() {
  local file=$1; shift
  awk -v bad="$*" '
    BEGIN { n = split(bad, b, " "); for (i = 1; i <= n; i++) isbad[b[i]] = 1 }
    NR == FNR {
      if ($0 ~ /^[A-Za-z].*\) \{$/) start = FNR
      if (start && isbad[FNR]) marked[start] = 1
      if ($0 ~ /^}$/) start = 0
      next
    }
    skipping { if ($0 ~ /^}$/) { skipping = 0; print } ; next }
    marked[FNR] {
      print
      name = $0; sub(/\(.*/, "", name); sub(/.* /, "", name)
      op = name; sub(/^atg_/, "", op)
      printf "  torch_last_err = strdup(\"op %s not available in the installed libtorch (stubbed by loraft deploy/build-shim.sh)\");\n", op
      if ($0 !~ /^void /) print "  return {};"
      print name >> "stubbed-ops.txt"
      skipping = 1
      next
    }
    { print }
  ' "$file" "$file" > "$file.new"
  mv "$file.new" "$file"
}

compile() { # compile FILE: object next to it, errors in FILE.err
  g++ $cxxflags -c "$1" -o "${1%.cpp}.o" 2> "$1.err"
}
export -f compile
export cxxflags

echo "build-shim: compiling gotch's torch_api against libtorch $TORCH_VERSION ($TORCH_SOURCE, ABI $TORCH_ABI, CUDA $TORCH_CUDA) with $jobs jobs..."
ls gen_*.cpp torch_api.cpp | xargs -P "$jobs" -I{} bash -c 'compile {}' || true
for pass in 1 2 3; do
  failed=""
  for f in gen_*.cpp torch_api.cpp; do [ -s "${f%.cpp}.o" ] || failed="$failed $f"; done
  [ -z "$failed" ] && break
  for f in $failed; do
    if [ "$f" = torch_api.cpp ]; then
      echo "build-shim: torch_api.cpp (gotch's hand-written part) does not compile against this libtorch:" >&2
      head -n 40 "$f.err" >&2
      exit 1
    fi
    h="${f%.cpp}.cpp.h"
    lines=$(grep -oE "(^|/)$h:[0-9]+:[0-9]+: (error|  required from)" "$f.err" | cut -d: -f2 | sort -un | tr '\n' ' ')
    if [ -z "$lines" ]; then
      echo "build-shim: $f failed with errors outside the generated wrappers:" >&2
      head -n 40 "$f.err" >&2
      exit 1
    fi
    stub "$h" $lines
  done
  echo "build-shim: pass $pass stubbed $(wc -l < stubbed-ops.txt) ops so far; recompiling$failed"
  echo "$failed" | xargs -n 1 | xargs -P "$jobs" -I{} bash -c 'compile {}' || true
done
for f in gen_*.cpp torch_api.cpp; do
  [ -s "${f%.cpp}.o" ] || { echo "build-shim: $f still fails after stubbing:" >&2; head -n 40 "$f.err" >&2; exit 1; }
done

sort -o stubbed-ops.txt stubbed-ops.txt
# The stubbed list is compiled in so a running binary can report it.
{ echo 'R"LORAFT(' ; cat stubbed-ops.txt; echo ')LORAFT"'; } > stubbed_ops.inc
# -O2 and no FMA contraction: the NF4 loop must round as the tensor ops do.
g++ $cxxflags -O2 -ffp-contract=off -c loraft_ext.cpp -o loraft_ext.o 2> loraft_ext.err || { cat loraft_ext.err >&2; exit 1; }

g++ -shared -o libtch.so ./*.o $ldflags
mkdir -p "$out"
cp stubbed-ops.txt "$out/.libtch-stubbed-ops.txt.tmp" && mv -f "$out/.libtch-stubbed-ops.txt.tmp" "$out/libtch-stubbed-ops.txt"
# Rename over the old library, never write into it: running processes keep the old inode.
cp libtch.so "$out/.libtch.so.tmp" && mv -f "$out/.libtch.so.tmp" "$out/libtch.so"
echo "$stamp" > "$out/libtch.stamp"
echo "build-shim: wrote $out/libtch.so ($(wc -l < stubbed-ops.txt) ops stubbed, list in $out/libtch-stubbed-ops.txt)"
