//go:build !race

package allreduce

// addFloats sets dst[i] and src[i] to dst[i] + src[i] for i < len(src), four
// values per SSE instruction; len(dst) >= len(src). The race detector does not
// see into assembly, so race builds use the Go loop (add_generic.go).
//
//go:noescape
func addFloats(dst, src []float32)
