package allreduce

import (
	"math"
	"testing"

	pb "github.com/loraft/loraft/proto/allreducepb"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"
)

// FuzzChunkDecode feeds arbitrary bytes, split into up to three frame
// buffers at arbitrary points, to the receive path of a chunk: the wire
// decoder, the position check and the float decoding. It never panics; a
// chunk it accepts is the one proto.Unmarshal reads from the same bytes
// (unknown fields aside); a chunk the check accepts carries whole floats
// that fit the segment, and adding or copying them touches only those.
func FuzzChunkDecode(f *testing.F) {
	for _, c := range wireTestChunks() {
		b, err := proto.Marshal(c)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b, uint16(len(b)/3), uint16(len(b)/2), uint8(0), uint16(0))
	}
	good, err := proto.Marshal(&pb.Chunk{RunId: testRun, Generation: 1, Step: 7, Phase: pb.Phase_PHASE_REDUCE_SCATTER,
		FromRank: 1, Segment: 1, Offset: 2, Data: encode([]float32{1, 2, float32(math.NaN())}), Length: 10})
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good, uint16(5), uint16(9), uint8(1), uint16(2))
	f.Add([]byte{0x4a, 0x80}, uint16(1), uint16(1), uint8(0), uint16(0))
	f.Add([]byte{0x5a, 0x03, 0x08, 0x01, 0x12}, uint16(2), uint16(4), uint8(0), uint16(0))
	f.Fuzz(func(t *testing.T, b []byte, cut1, cut2 uint16, round uint8, offset uint16) {
		i, j := min(int(cut1), len(b)), min(int(cut2), len(b))
		if i > j {
			i, j = j, i
		}
		frames := mem.BufferSlice{mem.SliceBuffer(b[:i]), mem.SliceBuffer(b[i:j]), mem.SliceBuffer(b[j:])}
		var c pb.Chunk
		if err := (wireCodec{}).Unmarshal(frames, &c); err != nil {
			if c.Data != nil {
				t.Fatalf("a failed decode kept %d data bytes", len(c.Data))
			}
			return
		}
		var ref pb.Chunk
		if err := proto.Unmarshal(b, &ref); err == nil {
			ref.ProtoReflect().SetUnknown(nil)
			if a := ref.GetAbort(); a != nil {
				a.ProtoReflect().SetUnknown(nil)
			}
			got := proto.Clone(&c).(*pb.Chunk)
			if a := got.GetAbort(); a != nil {
				a.ProtoReflect().SetUnknown(nil)
			}
			if !proto.Equal(got, &ref) {
				t.Fatalf("wire decoder read %v, proto.Unmarshal %v", got, &ref)
			}
		}
		// The position check, for a step of c.Length elements (bounded, as
		// a rank's own buffer is) over two ranks.
		n := int(min(c.GetLength(), 1<<16))
		st := &stepRun{r: &Ring{cfg: Config{Rank: 0, World: 2}}, n: n}
		off := segments(n, 2)
		seg := int(c.GetSegment() % 2)
		w := want{from: int(c.GetFromRank()), phase: c.GetPhase(), round: int(round % 2), segment: seg,
			offset: min(int(offset), off[seg+1]-off[seg]), size: off[seg+1] - off[seg]}
		k, err := st.check(&c, w)
		if err != nil {
			return
		}
		if k <= 0 || k > w.size-w.offset || 4*k != len(c.Data) {
			t.Fatalf("check accepted %d elements of %d bytes for %d free elements", k, len(c.Data), w.size-w.offset)
		}
		buf := make([]float32, n+2) // a guard element each side
		buf[0], buf[n+1] = 42, 42
		dst := buf[1+off[seg]+w.offset : 1+off[seg]+w.offset+k]
		decodeInto(dst, c.Data)
		addInto(dst, c.Data)
		if buf[0] != 42 || buf[n+1] != 42 {
			t.Fatal("decoding a chunk wrote outside its span")
		}
		putBuf(c.Data)
	})
}
