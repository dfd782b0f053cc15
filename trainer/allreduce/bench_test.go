package allreduce

import (
	"context"
	"fmt"
	"testing"
)

// BenchmarkAllReduce times one step of 4 ranks in one process over loopback
// gRPC: the bert-base r=8 gradient (1.2 MB) and a 16 MB buffer, ring against
// the naive gather-to-rank-0 baseline. MB/s counts one rank's buffer.
func BenchmarkAllReduce(b *testing.B) {
	const w = 4
	for _, size := range []struct {
		name string
		n    int
	}{{"1.2MB", bertBaseR8}, {"16MB", 4 << 20}} {
		for _, algo := range []string{"ring", "naive"} {
			b.Run(fmt.Sprintf("%s/%s", size.name, algo), func(b *testing.B) {
				c := newCluster(b, w, nil)
				bufs := make([][]float32, w)
				for r := range bufs {
					bufs[r] = make([]float32, size.n)
				}
				b.SetBytes(int64(size.n * 4))
				b.ReportAllocs()
				var step uint64
				for b.Loop() {
					step++
					errs, _ := c.reduce(nil, func(r *Ring) error {
						if algo == "naive" {
							return r.NaiveAllReduce(context.Background(), step, bufs[r.Rank()])
						}
						return r.AllReduce(context.Background(), step, bufs[r.Rank()])
					})
					for i, err := range errs {
						if err != nil {
							b.Fatalf("rank %d: %v", i, err)
						}
					}
				}
			})
		}
	}
}
