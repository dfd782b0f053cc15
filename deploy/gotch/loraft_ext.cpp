// loraft's additions to gotch's C API, compiled into libtch.so by
// deploy/build-shim.sh (stubbed_ops.inc is written by that script).
#include <torch/version.h>

extern "C" {
const char *loraft_torch_version() { return TORCH_VERSION; }

const char *loraft_stubbed_ops() {
  static const char *ops =
#include "stubbed_ops.inc"
      ;
  return ops;
}

int loraft_cxx11_abi() { return _GLIBCXX_USE_CXX11_ABI; }
}
