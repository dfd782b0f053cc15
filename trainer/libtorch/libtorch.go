// Package libtorch owns this process's link to libtorch through the adapted
// gotch: the intra-op thread pool, and a description of the loaded library
// (version, CUDA, C++ ABI, ops the installed libtorch lacks).
//
// gotch's C++ half lives in lib/libtch.so, built by deploy/build-shim.sh against
// whatever libtorch the machine has; ops missing from that libtorch are stubbed
// there and return an error naming the op when called.
package libtorch

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"

	lib "github.com/sugarme/gotch/libtch"
)

// ErrBadThreads reports an OMP_NUM_THREADS value that is not a positive integer.
var ErrBadThreads = errors.New("OMP_NUM_THREADS must be a positive integer")

// SetThreads sizes libtorch's intra-op thread pool: OMP_NUM_THREADS when the
// environment sets it, otherwise every CPU; and keeps OpenBLAS's own pool on
// one thread unless OPENBLAS_NUM_THREADS is set (see limitBLASThreads). libtorch 1.13 on some VMs starts
// with one thread unless told otherwise, so loraft always sets it explicitly.
// It returns the thread count libtorch reports afterwards.
func SetThreads() (int, error) {
	n := runtime.NumCPU()
	if v, ok := os.LookupEnv("OMP_NUM_THREADS"); ok {
		k, err := strconv.Atoi(strings.TrimSpace(v))
		if err != nil || k < 1 {
			return 0, fmt.Errorf("libtorch threads: %w, got %q", ErrBadThreads, v)
		}
		n = k
	}
	lib.AtSetNumThreads(n)
	limitBLASThreads()
	return lib.AtGetNumThreads(), nil
}

// Info describes the libtorch this process runs on.
type Info struct {
	// TorchVersion is the libtorch version libtch.so was compiled against.
	TorchVersion string `json:"torch_version"`
	// GotchVersion is gotch's module version (adapted in third_party/gotch).
	GotchVersion string `json:"gotch_version"`
	// CUDA reports whether libtorch sees a CUDA device; CUDADevices counts them.
	CUDA        bool `json:"cuda"`
	CUDADevices int  `json:"cuda_devices"`
	// Threads is libtorch's intra-op thread count.
	Threads int `json:"threads"`
	// CXX11ABI is the _GLIBCXX_USE_CXX11_ABI value of the shim's build.
	CXX11ABI bool `json:"cxx11_abi"`
	// Shim is the path of the loaded libtch.so, when it can be found.
	Shim string `json:"shim,omitempty"`
	// StubbedOps lists gotch's generated ops the installed libtorch lacks.
	StubbedOps []string `json:"stubbed_ops"`
}

// Describe reports the loaded libtorch. It does not change any setting.
func Describe() Info {
	info := Info{
		TorchVersion: lib.LoraftTorchVersion(),
		GotchVersion: lib.LoraftGotchVersion + " (adapted in third_party/gotch)",
		CUDA:         lib.AtcCudaIsAvailable(),
		Threads:      lib.AtGetNumThreads(),
		CXX11ABI:     lib.LoraftCXX11ABI(),
		Shim:         loadedShim(),
		StubbedOps:   StubbedOps(),
	}
	if info.CUDA {
		info.CUDADevices = int(lib.AtcCudaDeviceCount())
	}
	return info
}

// StubbedOps lists the C names (atg_…) of the ops the shim had to stub.
func StubbedOps() []string {
	return strings.Fields(lib.LoraftStubbedOps())
}

// loadedShim finds libtch.so among the process's mapped files, which is where
// the dynamic loader really found it (rpath $ORIGIN/../lib or the build path).
func loadedShim() string {
	f, err := os.Open("/proc/self/maps")
	if err != nil {
		return ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) >= 6 && strings.HasSuffix(fields[5], "/libtch.so") {
			return fields[5]
		}
	}
	return ""
}

// ManualSeed seeds libtorch's generators. Dropout draws from them, so the
// trainer seeds them from (run seed, step) at every step: the random state is
// then a function of the step, and a resumed run draws what it would have.
func ManualSeed(seed int64) { lib.AtManualSeed(seed) }

// NoGrad turns autograd off on the calling OS thread and returns a function
// that restores the previous mode. Grad mode is per thread: the caller must
// be locked to its thread (runtime.LockOSThread) until it calls restore.
// Use it instead of gotch's ts.NoGrad (which re-enables rather than restores)
// and ts.GradSetEnabled (whose returned previous state is unreliable).
func NoGrad() (restore func()) {
	prev := lib.LoraftGradSetEnabled(false)
	return func() { lib.LoraftGradSetEnabled(prev) }
}
