package allreduce

import (
	"context"

	pb "github.com/loraft/loraft/proto/allreducepb"
)

// NaiveAllReduce computes the same sum as AllReduce the naive way: every rank
// streams its whole buffer to rank 0, which adds them in rank order and
// streams the result back to every rank. Rank 0's links carry World-1 times
// the buffer each way, so it scales worse than the ring; it exists as a
// benchmark baseline and is not meant for training. It shares AllReduce's
// fencing, deadlines, errors and step numbering, and all ranks of a step must
// use the same algorithm.
func (r *Ring) NaiveAllReduce(ctx context.Context, step uint64, buf []float32) error {
	w := r.cfg.World
	if w == 1 {
		return nil
	}
	if r.cfg.Rank != 0 {
		return r.run(ctx, step, buf, []int{0}, func(st *stepRun, ibs []*inbox) error {
			st.sendSpan(st.send(0), pb.Phase_PHASE_GATHER, 0, 0, buf)
			return st.receiveSpan(ibs[0], pb.Phase_PHASE_BROADCAST, buf, decodeInto)
		})
	}
	from := make([]int, 0, w-1)
	for i := 1; i < w; i++ {
		from = append(from, i)
	}
	return r.run(ctx, step, buf, from, func(st *stepRun, ibs []*inbox) error {
		out := make([]*sender, 0, w-1)
		for i := 1; i < w; i++ {
			out = append(out, st.send(i)) // open the streams while gathering
		}
		for _, ib := range ibs { // fixed order: ((buf0 + buf1) + buf2) + ...
			if err := st.receiveSpan(ib, pb.Phase_PHASE_GATHER, buf, addInto); err != nil {
				return err
			}
		}
		for off, end := range st.spans(len(buf)) {
			c := newOutChunk(st.chunk(pb.Phase_PHASE_BROADCAST, 0, 0, off, encode(buf[off:end])), true, len(out))
			for _, s := range out {
				s.push(c) // shared read-only by the streams
			}
		}
		return nil
	})
}

// receiveSpan applies every chunk of the whole buffer, sent by ib's peer as
// segment 0 of round 0 of phase, to buf with apply.
func (st *stepRun) receiveSpan(ib *inbox, phase pb.Phase, buf []float32, apply func([]float32, []byte)) error {
	for got := 0; got < len(buf); {
		c, err := st.recv(ib)
		if err != nil {
			return err
		}
		k, err := st.check(c, want{from: ib.key.from, phase: phase, segment: 0, offset: got, size: len(buf)})
		if err != nil {
			return err
		}
		apply(buf[got:got+k], c.Data)
		putBuf(c.Data)
		got += k
	}
	return nil
}
