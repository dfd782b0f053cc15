package allreduce

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/bits"
	"sync"
	"sync/atomic"
	"unicode/utf8"

	pb "github.com/loraft/loraft/proto/allreducepb"
	"google.golang.org/grpc/encoding"
	_ "google.golang.org/grpc/encoding/proto" // registers the fallback codec
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

// The Exchange streams speak plain protobuf (the wire format of
// allreduce.proto, content-subtype "proto"), but a Chunk's data is moved with
// one copy each way instead of gRPC's proto codec's four: the sender hands
// gRPC the data buffer itself next to a few header bytes, and the receiver
// parses the header and copies the data straight from gRPC's frame buffers
// into a pooled, float32-aligned buffer, which the ring adds into, forwards
// as is and recycles once gRPC has written it. Other messages go through the
// proto codec unchanged.

// wireCodec is the codec of the Exchange streams, on both ends.
type wireCodec struct{}

var protoCodec = encoding.GetCodecV2("proto")

func (wireCodec) Name() string { return "proto" }

func (wireCodec) Marshal(v any) (mem.BufferSlice, error) {
	switch m := v.(type) {
	case *outChunk:
		return m.marshal(), nil
	case *pb.Chunk:
		return (&outChunk{c: m}).marshal(), nil
	}
	return protoCodec.Marshal(v)
}

func (wireCodec) Unmarshal(data mem.BufferSlice, v any) error {
	if c, ok := v.(*pb.Chunk); ok {
		return unmarshalChunk(data, c)
	}
	return protoCodec.Unmarshal(data, v)
}

// outChunk is a chunk queued for sending. When pooled, c.Data is a buffer of
// the pool and goes back to it once every stream it was queued on has
// written it (refs counts them). Neither c nor c.Data may change once queued.
type outChunk struct {
	c      *pb.Chunk
	pooled bool
	refs   atomic.Int32
}

// newOutChunk wraps c for sending on streams streams; pooled says c.Data came
// from getBuf and is no longer used by the caller.
func newOutChunk(c *pb.Chunk, pooled bool, streams int) *outChunk {
	o := &outChunk{c: c, pooled: pooled}
	o.refs.Store(int32(streams))
	return o
}

// Get and Put make o the mem.BufferPool of its data buffer: gRPC calls Put
// when it is done with it.
func (o *outChunk) Get(int) *[]byte { panic("allreduce: outChunk is not a buffer pool") }

func (o *outChunk) Put(*[]byte) {
	if o.refs.Add(-1) == 0 {
		putBuf(o.c.Data)
	}
}

// marshal encodes the chunk as allreduce.proto does, fields in number order,
// without copying its data.
func (o *outChunk) marshal() mem.BufferSlice {
	c := o.c
	h := make([]byte, 0, 80+len(c.RunId))
	if c.RunId != "" {
		h = protowire.AppendTag(h, 1, protowire.BytesType)
		h = protowire.AppendString(h, c.RunId)
	}
	h = appendVarint(h, 2, c.Generation)
	h = appendVarint(h, 3, c.Step)
	h = appendVarint(h, 4, uint64(int64(c.Phase)))
	h = appendVarint(h, 5, uint64(c.Round))
	h = appendVarint(h, 6, uint64(c.FromRank))
	h = appendVarint(h, 7, uint64(c.Segment))
	h = appendVarint(h, 8, c.Offset)
	if len(c.Data) > 0 {
		h = protowire.AppendTag(h, 9, protowire.BytesType)
		h = protowire.AppendVarint(h, uint64(len(c.Data)))
	}
	var t []byte
	t = appendVarint(t, 10, c.Length)
	if c.Abort != nil {
		a, err := proto.MarshalOptions{Deterministic: true}.Marshal(c.Abort)
		if err != nil { // an Abort has no required fields or invalid UTF-8 of ours
			panic(fmt.Sprintf("allreduce: marshal abort: %v", err))
		}
		t = protowire.AppendTag(t, 11, protowire.BytesType)
		t = protowire.AppendBytes(t, a)
	}
	s := mem.BufferSlice{mem.SliceBuffer(h)}
	if len(c.Data) > 0 {
		if o.pooled {
			d := c.Data
			s = append(s, mem.NewBuffer(&d, o))
		} else {
			s = append(s, mem.SliceBuffer(c.Data))
		}
	} else if o.pooled {
		o.Put(nil)
	}
	if len(t) > 0 {
		s = append(s, mem.SliceBuffer(t))
	}
	return s
}

func appendVarint(b []byte, num protowire.Number, v uint64) []byte {
	if v == 0 {
		return b
	}
	b = protowire.AppendTag(b, num, protowire.VarintType)
	return protowire.AppendVarint(b, v)
}

var errMalformed = errors.New("malformed Chunk")

// unmarshalChunk decodes a Chunk, copying its data into a pooled buffer.
// Unknown fields are skipped.
func unmarshalChunk(data mem.BufferSlice, c *pb.Chunk) (err error) {
	r := data.Reader()
	defer r.Close()
	defer func() {
		if err != nil && c.Data != nil {
			putBuf(c.Data)
			c.Data = nil
		}
	}()
	for r.Remaining() > 0 {
		tag, err := binary.ReadUvarint(r)
		if err != nil {
			return errMalformed
		}
		num, typ := protowire.Number(tag>>3), protowire.Type(tag&7)
		if num <= 0 {
			return errMalformed
		}
		if typ == protowire.VarintType {
			v, err := binary.ReadUvarint(r)
			if err != nil {
				return errMalformed
			}
			switch num {
			case 2:
				c.Generation = v
			case 3:
				c.Step = v
			case 4:
				c.Phase = pb.Phase(int32(v))
			case 5:
				c.Round = uint32(v)
			case 6:
				c.FromRank = uint32(v)
			case 7:
				c.Segment = uint32(v)
			case 8:
				c.Offset = v
			case 10:
				c.Length = v
			}
			continue
		}
		var n uint64
		switch typ {
		case protowire.BytesType:
			if n, err = binary.ReadUvarint(r); err != nil || n > uint64(r.Remaining()) {
				return errMalformed
			}
		case protowire.Fixed32Type:
			n = 4
		case protowire.Fixed64Type:
			n = 8
		default: // groups are not part of proto3
			return errMalformed
		}
		if n > uint64(r.Remaining()) {
			return errMalformed
		}
		switch {
		case typ == protowire.BytesType && num == 9:
			if c.Data != nil {
				putBuf(c.Data)
			}
			c.Data = getBuf(int(n))
			if _, err := io.ReadFull(r, c.Data); err != nil {
				return errMalformed
			}
		case typ == protowire.BytesType && (num == 1 || num == 11):
			b := make([]byte, n)
			if _, err := io.ReadFull(r, b); err != nil {
				return errMalformed
			}
			if num == 1 {
				if !utf8.Valid(b) {
					return fmt.Errorf("%w: run_id is not UTF-8", errMalformed)
				}
				c.RunId = string(b)
				continue
			}
			if c.Abort == nil {
				c.Abort = new(pb.Abort)
			}
			if err := (proto.UnmarshalOptions{Merge: true}).Unmarshal(b, c.Abort); err != nil {
				return fmt.Errorf("%w: abort: %v", errMalformed, err)
			}
		default:
			if _, err := r.Discard(int(n)); err != nil {
				return errMalformed
			}
		}
	}
	if len(c.Data) == 0 && c.Data != nil {
		c.Data = nil
	}
	return nil
}

// Chunk buffers come from pools of power-of-two sizes, allocated as float32
// slices so they are aligned for addInto. The same pools serve gRPC's frame
// and message buffers (without zeroing them: gRPC overwrites what it reads).
const (
	minBufShift = 8  // 256 B
	maxBufShift = 23 // 8 MiB, more than MaxChunkBytes
)

// bufPools hold *[]byte of each size; boxes holds spare *[]byte, so that
// lending a buffer out as a slice and taking it back allocates nothing.
var (
	bufPools [maxBufShift + 1]sync.Pool
	boxes    = sync.Pool{New: func() any { return new([]byte) }}
)

// bufClass returns the shift of the smallest pooled size that holds n bytes,
// or -1 when n is too large.
func bufClass(n int) int {
	s := minBufShift
	if n > 1<<minBufShift {
		s = bits.Len(uint(n - 1))
	}
	if s > maxBufShift {
		return -1
	}
	return s
}

// getBox returns a pooled buffer of n bytes with unspecified contents, boxed.
func getBox(n int) *[]byte {
	s := bufClass(n)
	if s < 0 {
		b := bytesOf(make([]float32, (n+3)/4))[:n]
		return &b
	}
	if p, ok := bufPools[s].Get().(*[]byte); ok {
		*p = (*p)[:n]
		return p
	}
	b := bytesOf(make([]float32, 1<<s/4))[:n]
	return &b
}

// putBox returns the buffer in p, which nobody may use any more, to its pool.
// Buffers not of a pooled size are left to the garbage collector.
func putBox(p *[]byte) {
	c := cap(*p)
	if c == 0 || c&(c-1) != 0 {
		return
	}
	if s := bits.Len(uint(c)) - 1; s >= minBufShift && s <= maxBufShift {
		bufPools[s].Put(p)
	}
}

// getBuf returns a buffer of n bytes with unspecified contents.
func getBuf(n int) []byte {
	p := getBox(n)
	b := *p
	*p = nil
	boxes.Put(p)
	return b
}

// putBuf returns b, which nobody may use any more, to its pool.
func putBuf(b []byte) {
	c := cap(b)
	if c == 0 || c&(c-1) != 0 {
		return
	}
	p := boxes.Get().(*[]byte)
	*p = b
	putBox(p)
}

// grpcPool lends the chunk buffer pools to gRPC for its frame buffers.
type grpcPool struct{}

func (grpcPool) Get(n int) *[]byte { return getBox(n) }
func (grpcPool) Put(p *[]byte)     { putBox(p) }

var _ mem.BufferPool = grpcPool{}
