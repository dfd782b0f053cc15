# shellcheck shell=bash
# Sourced by deploy/setup.sh and deploy/build-shim.sh: finds the libtorch to
# build against and describes it in TORCH_* variables. No Go needed, so it also
# runs on GPU machines that only have a pip PyTorch and g++.
#
# Order: $LIBTORCH (a dir with include/ and lib/), then a pip PyTorch that
# python3 can find, then Debian's libtorch-dev.
#
# Sets: TORCH_SOURCE (env|pip|debian), TORCH_LIB, TORCH_CXX_INCLUDES (the -I
# flags), TORCH_VERSION (x.y.z from the headers), TORCH_ABI (0|1: the
# _GLIBCXX_USE_CXX11_ABI libtorch was built with), TORCH_CUDA (0|1).

libtorch_pip_root() {
  command -v python3 >/dev/null 2>&1 || return 1
  # find_spec locates the package without importing it (importing torch takes seconds).
  python3 - <<'PY' 2>/dev/null
import importlib.util, os, sys
s = importlib.util.find_spec("torch")
if s is None or not s.submodule_search_locations:
    sys.exit(1)
root = s.submodule_search_locations[0]
if not os.path.isfile(os.path.join(root, "include", "torch", "csrc", "api", "include", "torch", "torch.h")):
    sys.exit(1)
print(root)
PY
}

# libtorch_detect sets the TORCH_* variables; it returns 1 when no libtorch is found.
libtorch_detect() {
  local root inc
  if [ -n "${LIBTORCH:-}" ]; then
    if [ ! -d "$LIBTORCH/include" ] || [ ! -d "$LIBTORCH/lib" ]; then
      echo "libtorch: LIBTORCH=$LIBTORCH has no include/ and lib/ folders" >&2
      return 1
    fi
    TORCH_SOURCE=env
    TORCH_LIB="$LIBTORCH/lib"
    inc="$LIBTORCH/include"
    TORCH_CXX_INCLUDES="-I$inc -I$inc/torch/csrc/api/include"
  elif root=$(libtorch_pip_root); then
    TORCH_SOURCE=pip
    TORCH_LIB="$root/lib"
    inc="$root/include"
    TORCH_CXX_INCLUDES="-I$inc -I$inc/torch/csrc/api/include"
  elif [ -f /usr/include/torch/csrc/api/include/torch/torch.h ]; then
    TORCH_SOURCE=debian
    TORCH_LIB="/usr/lib/$(gcc -print-multiarch 2>/dev/null || echo x86_64-linux-gnu)"
    inc=/usr/include
    # Never -I/usr/include: it reorders the system include path and breaks libstdc++'s #include_next.
    TORCH_CXX_INCLUDES="-I$inc/torch/csrc/api/include"
  else
    return 1
  fi
  if [ ! -e "$TORCH_LIB/libc10.so" ] || [ ! -e "$TORCH_LIB/libtorch_cpu.so" ]; then
    echo "libtorch: $TORCH_LIB has no libc10.so / libtorch_cpu.so ($TORCH_SOURCE)" >&2
    return 1
  fi
  local vh="$inc/torch/csrc/api/include/torch/version.h"
  TORCH_VERSION=$(awk '/define TORCH_VERSION_(MAJOR|MINOR|PATCH)/ {v = v (v == "" ? "" : ".") $3} END {print v}' "$vh" 2>/dev/null)
  [ -n "$TORCH_VERSION" ] || TORCH_VERSION=unknown
  # libtorch built with the new libstdc++ ABI exports std::__cxx11 symbols.
  # (grep without -q reads all of nm's output: an early exit would SIGPIPE nm
  # and, under pipefail, read as "no".)
  if nm -D "$TORCH_LIB/libc10.so" 2>/dev/null | grep __cxx11 >/dev/null; then TORCH_ABI=1; else TORCH_ABI=0; fi
  if [ -e "$TORCH_LIB/libtorch_cuda.so" ]; then TORCH_CUDA=1; else TORCH_CUDA=0; fi
  return 0
}
