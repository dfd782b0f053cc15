package allreduce

import (
	"context"

	pb "github.com/loraft/loraft/proto/allreducepb"
)

// AllReduce replaces buf, on every rank, with the element-wise sum of all
// ranks' buf for this step. Every rank must call it with the same step and
// the same len(buf); steps must grow within a generation. On success every
// rank holds byte-identical buffers: each segment is summed in one fixed
// order on one rank and copied to the others.
//
// The call returns within Config.StepTimeout (or ctx's deadline, if
// earlier), plus at most 100 ms to tell the right neighbour why it failed. On
// error buf holds partial sums and the error wraps one of
// ErrStaleGeneration, ErrWrongRun, ErrPeerLost, ErrTimeout, ErrProtocol,
// ErrClosed or ErrStepOrder (or ctx's error if ctx was cancelled); a
// RemoteError inside names the rank that failed first. The Ring stays usable
// for later steps.
//
// With World == 1 AllReduce does nothing. Calls on one Ring are serialised.
func (r *Ring) AllReduce(ctx context.Context, step uint64, buf []float32) error {
	if r.cfg.World == 1 {
		return nil
	}
	left, right := r.cfg.left(), r.cfg.right()
	return r.run(ctx, step, buf, []int{left}, func(st *stepRun, ibs []*inbox) error {
		return st.ring(ibs[0], st.send(right), buf)
	})
}

// run is the frame every algorithm runs in: it registers the step, receives
// from the ranks in from, applies the deadline and closes the streams.
func (r *Ring) run(ctx context.Context, step uint64, buf []float32, from []int, algo func(*stepRun, []*inbox) error) error {
	r.stepMu.Lock()
	defer r.stepMu.Unlock()
	gen, ibs, err := r.begin(step, from)
	if err != nil {
		return stepError(r.cfg.Rank, r.Generation(), step, err)
	}
	ctx, cancel := context.WithTimeout(ctx, r.cfg.StepTimeout)
	defer cancel()
	st := r.newStepRun(ctx, gen, step, len(buf), r.cfg.World)
	err = st.end(algo(st, ibs))
	r.finish(gen, step, ibs, err)
	if err != nil {
		return st.wrap(err)
	}
	return nil
}

// segments splits n elements into w contiguous segments whose sizes differ by
// at most one (the first n%w are one longer). Segment i is [off[i], off[i+1]).
func segments(n, w int) []int {
	off := make([]int, w+1)
	for i := range w {
		size := n / w
		if i < n%w {
			size++
		}
		off[i+1] = off[i] + size
	}
	return off
}

// ringRound says what the j-th incoming round of the ring (0 <= j < 2(w-1))
// is for rank: reduce-scatter round j brings segment rank-j-1, all-gather
// round k = j-(w-1) brings segment rank-k (indices mod w).
func ringRound(j, rank, w int) (phase pb.Phase, round, segment int) {
	if j < w-1 {
		return pb.Phase_PHASE_REDUCE_SCATTER, j, ((rank-j-1)%w + w) % w
	}
	k := j - (w - 1)
	return pb.Phase_PHASE_ALL_GATHER, k, ((rank-k)%w + w) % w
}

// ring runs the ring algorithm for this rank: it streams its own segment to
// the right, then takes the left neighbour's chunks in order. A reduce-scatter
// chunk is added into buf; an all-gather chunk is copied. Each chunk is
// forwarded to the right as soon as it is applied, since the segment received
// in round j is exactly the one sent in round j+1: reduce-scatter round k
// sends segment rank-k, all-gather round k sends segment rank+1-k, and the
// segment that completes reduce-scatter (rank+1) opens the all-gather.
func (st *stepRun) ring(ib *inbox, right *sender, buf []float32) error {
	rank, w := st.r.cfg.Rank, st.r.cfg.World
	off := segments(len(buf), w)
	st.sendSpan(right, pb.Phase_PHASE_REDUCE_SCATTER, 0, rank, buf[off[rank]:off[rank+1]])

	rounds := 2 * (w - 1)
	for j := range rounds {
		phase, round, seg := ringRound(j, rank, w)
		lo, hi := off[seg], off[seg+1]
		for got := 0; got < hi-lo; {
			c, err := st.recv(ib)
			if err != nil {
				return err
			}
			k, err := st.check(c, want{from: ib.key.from, phase: phase, round: round, segment: seg, offset: got, size: hi - lo})
			if err != nil {
				return err
			}
			dst := buf[lo+got : lo+got+k]
			if phase == pb.Phase_PHASE_REDUCE_SCATTER {
				addInto(dst, c.Data)
			} else {
				decodeInto(dst, c.Data)
			}
			got += k
			if j+1 < rounds {
				nphase, nround, _ := ringRound(j+1, rank, w)
				c.Phase, c.Round, c.FromRank, c.Generation = nphase, uint32(nround), uint32(rank), st.gen
				right.push(newOutChunk(c, true, 1)) // c.Data goes back to the pool once sent
			} else {
				putBuf(c.Data)
			}
		}
	}
	return nil
}
