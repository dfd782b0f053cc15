package libtorch

// #include <malloc.h>
// static int loraft_malloc_trim(void) { return malloc_trim(0); }
// static int loraft_mmap_threshold(int n) { return mallopt(M_MMAP_THRESHOLD, n); }
import "C"

// TrimHeap hands the C heap's free pages back to the OS (glibc malloc_trim).
// libtorch on CPU allocates every tensor with malloc, and a training loop
// frees and reallocates the same sizes each step; glibc keeps the freed
// chunks, scattered among live ones, and RSS creeps up by some megabytes per
// thousand steps. It reports whether any memory was released.
func TrimHeap() bool { return C.loraft_malloc_trim() == 1 }

// SetMmapThreshold makes glibc serve allocations of at least n bytes with
// mmap (and so return them to the OS on free), fixing the threshold that
// glibc otherwise raises as large blocks are freed.
func SetMmapThreshold(n int) bool { return C.loraft_mmap_threshold(C.int(n)) == 1 }
