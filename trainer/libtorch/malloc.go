package libtorch

// #include <malloc.h>
// static int loraft_malloc_trim(void) { return malloc_trim(0); }
import "C"

// TrimHeap hands the C heap's free pages back to the OS (glibc malloc_trim).
// libtorch on CPU allocates every tensor with malloc, and a training loop
// frees and reallocates the same sizes each step; glibc keeps the freed
// chunks, scattered among live ones, and RSS creeps up by some megabytes per
// thousand steps. It reports whether any memory was released.
func TrimHeap() bool { return C.loraft_malloc_trim() == 1 }
