package allreduce

import (
	"bytes"
	"math"
	"testing"
	"unsafe"

	pb "github.com/loraft/loraft/proto/allreducepb"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

func wireTestChunks() []*pb.Chunk {
	data := make([]byte, 5000)
	for i := range data {
		data[i] = byte(i * 7)
	}
	return []*pb.Chunk{
		{},
		{RunId: "run-ü", Generation: 3, Step: 1 << 40, Phase: pb.Phase_PHASE_ALL_GATHER, Round: 2, FromRank: 1,
			Segment: 3, Offset: 12345, Data: data, Length: 1 << 33},
		{RunId: "r", Generation: math.MaxUint64, Phase: pb.Phase(-1), Round: math.MaxUint32, Data: data[:4], Length: 1},
		{RunId: "r", Generation: 1, Step: 9, FromRank: 2,
			Abort: &pb.Abort{Reason: pb.AbortReason_ABORT_REASON_TIMEOUT, OriginRank: 2, Message: "deadline"}},
	}
}

// TestWireCodecIsProto checks that the Exchange codec writes exactly the bytes
// the protobuf marshaller writes for a Chunk, and reads what it writes, also
// from gRPC buffers cut at any byte: ranks running the plain proto codec
// interoperate with it.
func TestWireCodecIsProto(t *testing.T) {
	for i, c := range wireTestChunks() {
		want, err := proto.MarshalOptions{Deterministic: true}.Marshal(c)
		if err != nil {
			t.Fatal(err)
		}
		got, err := wireCodec{}.Marshal(c)
		if err != nil {
			t.Fatal(err)
		}
		if b := got.Materialize(); !bytes.Equal(b, want) {
			t.Fatalf("chunk %d: wire codec wrote %x, proto %x", i, b, want)
		}
		// Extra fields a newer version might add are skipped.
		ext := protowire.AppendTag(bytes.Clone(want), 99, protowire.BytesType)
		ext = protowire.AppendString(ext, "later")
		ext = protowire.AppendTag(ext, 98, protowire.Fixed64Type)
		ext = protowire.AppendFixed64(ext, 7)
		ext = protowire.AppendTag(ext, 97, protowire.VarintType)
		ext = protowire.AppendVarint(ext, 300)
		for _, cut := range []int{1, 3, 16, len(ext) + 1} {
			var bs mem.BufferSlice
			for off := 0; off < len(ext); off += cut {
				bs = append(bs, mem.SliceBuffer(ext[off:min(off+cut, len(ext))]))
			}
			back := new(pb.Chunk)
			if err := (wireCodec{}).Unmarshal(bs, back); err != nil {
				t.Fatalf("chunk %d cut %d: %v", i, cut, err)
			}
			if !proto.Equal(back, c) {
				t.Fatalf("chunk %d cut %d: read back %v, want %v", i, cut, back, c)
			}
			if len(back.Data) > 0 && uintptr(unsafe.Pointer(&back.Data[0]))%4 != 0 {
				t.Fatalf("chunk %d: received data is not float32-aligned", i)
			}
		}
	}
}

// TestWireCodecRejectsMalformed checks that truncated or invalid messages are
// refused rather than read as chunks.
func TestWireCodecRejectsMalformed(t *testing.T) {
	good, err := proto.Marshal(wireTestChunks()[1])
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range [][]byte{
		good[:len(good)-1],
		{0x0a, 0x02, 0xff, 0xfe}, // run_id not UTF-8
		{0x4a, 0x80},             // data length truncated
		{0x4a, 0x10, 1, 2},       // data longer than the message
		{0x0b},                   // group
		{0x00, 0x01},             // field 0
	} {
		if err := (wireCodec{}).Unmarshal(mem.BufferSlice{mem.SliceBuffer(b)}, new(pb.Chunk)); err == nil {
			t.Fatalf("Unmarshal(%x) succeeded", b)
		}
	}
}

func TestBufPool(t *testing.T) {
	for _, n := range []int{0, 1, 255, 256, 257, 4 << 10, 300295, MaxChunkBytes, 8 << 20, 8<<20 + 4} {
		b := getBuf(n)
		if len(b) != n {
			t.Fatalf("getBuf(%d) has length %d", n, len(b))
		}
		if cap(b) > 0 && uintptr(unsafe.Pointer(unsafe.SliceData(b)))%4 != 0 {
			t.Fatalf("getBuf(%d) is not float32-aligned", n)
		}
		if n <= 8<<20 && cap(b)&(cap(b)-1) != 0 {
			t.Fatalf("getBuf(%d) has capacity %d, not a pooled size", n, cap(b))
		}
		putBuf(b)
	}
}

// TestSpans checks that a segment is cut into the fewest chunks of at most
// elems elements, of equal sizes give or take one, covering it in order.
func TestSpans(t *testing.T) {
	for _, elems := range []int{1, 3, 1024, 65536} {
		st := &stepRun{elems: elems}
		for _, n := range []int{0, 1, 2, 1023, 1024, 1025, 75074, 300295} {
			next, lo, hi, m := 0, n, 0, 0
			for off, end := range st.spans(n) {
				if off != next || end <= off || end-off > elems {
					t.Fatalf("elems %d n %d: chunk [%d, %d) after %d", elems, n, off, end, next)
				}
				lo, hi, next = min(lo, end-off), max(hi, end-off), end
				m++
			}
			if next != n || m != (n+elems-1)/elems || (m > 0 && hi-lo > 1) {
				t.Fatalf("elems %d n %d: %d chunks of %d..%d elements up to %d", elems, n, m, lo, hi, next)
			}
		}
	}
}
