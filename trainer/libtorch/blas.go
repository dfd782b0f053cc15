package libtorch

// #cgo LDFLAGS: -ldl
// #include <dlfcn.h>
// #include <stddef.h>
// typedef void (*set_threads_fn)(int);
// static int loraft_openblas_set_threads(int n) {
//   set_threads_fn f = (set_threads_fn)dlsym(RTLD_DEFAULT, "openblas_set_num_threads");
//   if (f == NULL) return 0;
//   f(n);
//   return 1;
// }
import "C"

import "os"

// limitBLASThreads keeps OpenBLAS (the BLAS behind Debian's libtorch) on one
// thread unless OPENBLAS_NUM_THREADS says otherwise. libtorch already runs
// ops on its own OpenMP pool; OpenBLAS's separate pool then competes with it
// for the same cores, and both spin: on a 2-core machine a bert-tiny training
// run took 39 s with both pools and 3.6 s with OpenBLAS on one thread, while
// bert-base steps took the same time either way. It reports whether an
// OpenBLAS was found in the process.
func limitBLASThreads() bool {
	if _, set := os.LookupEnv("OPENBLAS_NUM_THREADS"); set {
		return false
	}
	return C.loraft_openblas_set_threads(1) == 1
}
