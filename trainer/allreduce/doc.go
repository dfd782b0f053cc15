// Package allreduce sums one flat float32 buffer across the ranks of one
// training run with a ring all-reduce over gRPC. Only the LoRA adapter and
// classifier gradients cross the network (about 300k values, 1.2 MB, for
// bert-base with r=8 on query/value).
//
// # Algorithm
//
// The buffer is split into World contiguous segments whose sizes differ by at
// most one element. In reduce-scatter round k (k = 0..World-2) rank r sends
// segment (r-k) mod World to rank r+1 and adds the segment (r-k-1) mod World
// it receives from rank r-1 into its buffer; afterwards rank r holds the full
// sum of segment (r+1) mod World. In all-gather round k it sends segment
// (r+1-k) mod World and copies the segment (r-k) mod World it receives. Each
// segment is therefore summed once, in one fixed order, on one rank, and its
// bits are copied to the others: all ranks end with byte-identical buffers
// (DESIGN invariant 3). World = 1 is a no-op.
//
// # Message flow
//
// Per step, each rank opens one Exchange stream to its right neighbour (on a
// connection that lives as long as the Ring) and sends its own segment in
// chunks of at most Config.ChunkBytes. Every later chunk is one it received from the
// left: the segment a rank receives in round j is the one it sends in round
// j+1, so each chunk is applied (added or copied) and forwarded at once,
// pipelining the rounds chunk by chunk. Every chunk carries run id,
// generation, step, phase, round, sender, segment, offset and the buffer
// length, and the receiver checks that it is exactly the next chunk the
// algorithm produces.
//
// Chunks cross the wire as allreduce.proto's protobuf, byte for byte, but not
// through gRPC's proto codec: the sender hands gRPC the data bytes next to a
// few header bytes, and the receiver copies them once, from gRPC's frame
// buffers into a pooled buffer, which reduce-scatter adds into, forwards and
// recycles once gRPC has written it (wire.go). Per byte, that leaves the
// kernel's loopback or network copies, gRPC's two (into its write buffer, out
// of its read buffer), the one into the pooled buffer, and the add or the copy
// into the caller's buffer.
//
// The server side (one Exchange handler per incoming stream) fences every
// chunk: another run id or an older generation is refused with
// FailedPrecondition, and so is a newer one, which also fails the local step:
// this rank is the stale one until SetGeneration. Accepted chunks are queued in
// an inbox keyed by (step, sender) until the local AllReduce call of that
// step takes them; a neighbour that is ahead waits there, held back by gRPC
// flow control.
//
// # Failures
//
// A step ends with an error, never a hang, within Config.StepTimeout. The
// first failure travels both ways around the ring: downstream as an Abort
// message that ends the stream to the right, upstream as the status (with the
// Abort in its details) the handler ends the left neighbour's stream with. So
// a closed connection or a refused chunk is noticed by every rank at once
// rather than at the deadline, and the ranks return the first failure's
// sentinel (errors.Is) inside a RemoteError that names the rank that saw it.
// A rank that is idle, or not reached yet in this generation (it may still be
// starting up), is noticed at the deadline; one that was reached before and
// now refuses connections, at once.
// After an error the Ring can run later steps; after a re-assignment use
// SetGeneration, or Close it and Listen again.
//
// NaiveAllReduce, a gather-to-rank-0-then-broadcast over the same transport,
// is a benchmark baseline only.
package allreduce
