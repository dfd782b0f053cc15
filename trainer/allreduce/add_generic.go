//go:build !amd64 || race

package allreduce

// addFloats sets dst[i] and src[i] to dst[i] + src[i] for i < len(src);
// len(dst) >= len(src).
func addFloats(dst, src []float32) {
	dst = dst[:len(src)]
	for i, v := range src {
		s := dst[i] + v
		dst[i] = s
		src[i] = s
	}
}
