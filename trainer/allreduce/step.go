package allreduce

import (
	"context"
	"fmt"
	"time"

	pb "github.com/loraft/loraft/proto/allreducepb"
)

// abortGrace is how long a failing step waits for its abort messages to
// reach its peers before it cancels the streams.
const abortGrace = 100 * time.Millisecond

// stepRun is the state one AllReduce call shares between its algorithm and
// its streams.
type stepRun struct {
	r       *Ring
	ctx     context.Context // the step deadline
	gen     uint64
	step    uint64
	n       int // elements in the buffer
	elems   int // elements per chunk this rank sends
	errc    chan error
	senders []*sender
}

func (r *Ring) newStepRun(ctx context.Context, gen, step uint64, n, peers int) *stepRun {
	return &stepRun{
		r:     r,
		ctx:   ctx,
		gen:   gen,
		step:  step,
		n:     n,
		elems: r.cfg.ChunkBytes / 4,
		errc:  make(chan error, peers),
	}
}

// send starts a stream to rank to.
func (st *stepRun) send(to int) *sender {
	s := st.r.startSender(to, st.errc)
	st.senders = append(st.senders, s)
	return s
}

// chunk builds a chunk of this step sent by this rank.
func (st *stepRun) chunk(phase pb.Phase, round, segment, offset int, data []byte) *pb.Chunk {
	return &pb.Chunk{
		RunId:      st.r.cfg.RunID,
		Generation: st.gen,
		Step:       st.step,
		Phase:      phase,
		Round:      uint32(round),
		FromRank:   uint32(st.r.cfg.Rank),
		Segment:    uint32(segment),
		Offset:     uint64(offset),
		Data:       data,
		Length:     uint64(st.n),
	}
}

// sendSpan queues src, the whole of segment in round round of phase, to s in
// chunks (see spans).
func (st *stepRun) sendSpan(s *sender, phase pb.Phase, round, segment int, src []float32) {
	for off, end := range st.spans(len(src)) {
		s.push(newOutChunk(st.chunk(phase, round, segment, off, encode(src[off:end])), true, 1))
	}
}

// spans yields the chunks [off, end) n elements are sent in: the fewest
// chunks of at most st.elems elements, of sizes that differ by at most one,
// so that no small chunk trails the others. Receivers take chunks of any size.
func (st *stepRun) spans(n int) func(yield func(off, end int) bool) {
	return func(yield func(off, end int) bool) {
		if n == 0 {
			return
		}
		m := (n + st.elems - 1) / st.elems
		for i, off := 0, 0; i < m; i++ {
			end := off + n/m
			if i < n%m {
				end++
			}
			if !yield(off, end) {
				return
			}
			off = end
		}
	}
}

// recv returns the next chunk from ib, or the error that ends the step: the
// stream ended or was aborted before the step was complete, the step was
// failed (generation change, Close), a stream to a peer failed, or the
// deadline passed.
func (st *stepRun) recv(ib *inbox) (*pb.Chunk, error) {
	select {
	case c := <-ib.chunks:
		return c, nil
	case <-ib.ended:
		select { // every chunk of the stream was queued before it ended
		case c := <-ib.chunks:
			return c, nil
		default:
		}
		if ib.endErr != nil {
			return nil, ib.endErr
		}
		return nil, fmt.Errorf("%w: rank %d ended its stream before the step was complete", ErrPeerLost, ib.key.from)
	case <-ib.failed:
		return nil, ib.failErr
	case err := <-st.errc:
		return nil, err
	case <-st.ctx.Done():
		return nil, contextError(st.ctx)
	case <-st.r.closing:
		return nil, fmt.Errorf("%w: rank %d", ErrClosed, st.r.cfg.Rank)
	}
}

// want is the position in the step the next chunk from a peer must fill.
type want struct {
	from    int
	phase   pb.Phase
	round   int
	segment int
	offset  int // elements of the segment already received
	size    int // elements in the segment
}

// check verifies that c fills w and returns how many elements it carries.
func (st *stepRun) check(c *pb.Chunk, w want) (int, error) {
	if c.GetLength() != uint64(st.n) {
		return 0, fmt.Errorf("%w: rank %d reduces %d elements, rank %d reduces %d", ErrProtocol, c.GetFromRank(), c.GetLength(), st.r.cfg.Rank, st.n)
	}
	k := len(c.GetData()) / 4
	if int(c.GetFromRank()) != w.from || c.GetPhase() != w.phase || int(c.GetRound()) != w.round ||
		int(c.GetSegment()) != w.segment || c.GetOffset() != uint64(w.offset) ||
		len(c.GetData())%4 != 0 || k == 0 || k > w.size-w.offset {
		return 0, fmt.Errorf("%w: got rank %d %v round %d segment %d offset %d (%d bytes), want rank %d %v round %d segment %d offset %d (up to %d elements)",
			ErrProtocol, c.GetFromRank(), c.GetPhase(), c.GetRound(), c.GetSegment(), c.GetOffset(), len(c.GetData()),
			w.from, w.phase, w.round, w.segment, w.offset, w.size-w.offset)
	}
	return k, nil
}

// end closes the step's streams. After success it waits for every peer's ack
// and returns the first stream error; after a failure it sends every peer an
// abort carrying err and returns err.
func (st *stepRun) end(err error) error {
	if err == nil {
		for _, s := range st.senders {
			if serr := s.finish(st.ctx, st.r.closing); serr != nil && err == nil {
				err = serr
			}
		}
		if err == nil {
			return nil
		}
		// A peer failed after this rank had everything: the others still
		// need to hear why, so fall through to the aborts.
	}
	a := st.chunk(pb.Phase_PHASE_UNSPECIFIED, 0, 0, 0, nil)
	a.Abort = abortOf(st.r.cfg.Rank, err)
	for _, s := range st.senders {
		s.abort(a)
	}
	grace := time.NewTimer(abortGrace)
	defer grace.Stop()
	for _, s := range st.senders {
		select {
		case <-s.done:
		case <-grace.C:
		}
		s.stop()
	}
	return err
}

// wrap adds the step's coordinates to err.
func (st *stepRun) wrap(err error) error {
	return stepError(st.r.cfg.Rank, st.gen, st.step, err)
}

func stepError(rank int, gen, step uint64, err error) error {
	return fmt.Errorf("allreduce: rank %d generation %d step %d: %w", rank, gen, step, err)
}
