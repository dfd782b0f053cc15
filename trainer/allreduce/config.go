package allreduce

import (
	"crypto/tls"
	"fmt"
	"net"
	"time"
)

const (
	// DefaultStepTimeout bounds one AllReduce call when Config.StepTimeout is zero.
	DefaultStepTimeout = 30 * time.Second
	// DefaultChunkBytes is the chunk size when Config.ChunkBytes is zero:
	// large enough that per-message costs (framing, goroutine hand-offs,
	// scheduling) vanish next to the per-byte ones, and small enough that the
	// rounds of a step still overlap for buffers of a few MB and up.
	DefaultChunkBytes = 1 << 20
	// MaxChunkBytes is the largest accepted Config.ChunkBytes. Every server
	// accepts messages of this size plus framing, so ranks may differ in
	// ChunkBytes.
	MaxChunkBytes = 4 << 20
)

// maxRecvMsgBytes is the gRPC receive limit: a full chunk plus its header fields.
const maxRecvMsgBytes = MaxChunkBytes + 64<<10

// Config describes one rank of one ring. Every rank of a run gets the same
// World, Peers, RunID and Generation and its own Rank. The zero values of
// StepTimeout and ChunkBytes select the defaults.
type Config struct {
	// Rank is this rank's index in the ring, 0 <= Rank < World.
	Rank int
	// World is the number of ranks.
	World int
	// Peers holds the host:port of every rank, indexed by rank. Peers[Rank] is
	// where this rank listens; Peers[(Rank+1)%World] is its right neighbour.
	Peers []string
	// RunID names the training run; chunks of other runs are rejected.
	RunID string
	// Generation fences the ring to one assignment: chunks of any other
	// generation are rejected. Change it with Ring.SetGeneration.
	Generation uint64
	// StepTimeout bounds one AllReduce call (default DefaultStepTimeout): a
	// step that cannot finish in time returns ErrTimeout instead of hanging.
	StepTimeout time.Duration
	// ChunkBytes is the largest chunk segments are streamed in (default
	// DefaultChunkBytes); a multiple of 4, at most MaxChunkBytes. A segment
	// goes in the fewest chunks of at most ChunkBytes, of equal sizes give or
	// take one element.
	ChunkBytes int
	// ServerTLS and ClientTLS enable mutual TLS when both are set: ServerTLS
	// serves this rank (set ClientAuth to tls.RequireAndVerifyClientCert to
	// refuse clients without a certificate), ClientTLS dials the peers. When
	// both are nil the ring speaks plaintext, which is meant for loopback and
	// tests only.
	ServerTLS, ClientTLS *tls.Config
	// PeerIDs, when set (with TLS), are the trainer ids of the ranks, by
	// rank, as their certificates name them (loraft://trainer/<id>, see
	// internal/pki): this rank's server admits only clients whose
	// certificate is one of them, and it streams only to a server whose
	// certificate is one of them. Empty: any certificate the CA signed is
	// admitted.
	PeerIDs []string
}

// Validate checks the fields against each other and returns an error wrapping
// ErrInvalidConfig that names the first bad field.
func (c Config) Validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrInvalidConfig, fmt.Sprintf(format, args...))
	}
	switch {
	case c.World < 1:
		return bad("World is %d, want at least 1", c.World)
	case c.Rank < 0 || c.Rank >= c.World:
		return bad("Rank is %d, want 0 <= Rank < World (%d)", c.Rank, c.World)
	case len(c.Peers) != c.World:
		return bad("Peers has %d entries, want World (%d)", len(c.Peers), c.World)
	case c.RunID == "":
		return bad("RunID is empty")
	case c.StepTimeout < 0:
		return bad("StepTimeout is %v, want >= 0", c.StepTimeout)
	case c.ChunkBytes < 0 || c.ChunkBytes%4 != 0 || c.ChunkBytes > MaxChunkBytes:
		return bad("ChunkBytes is %d, want a multiple of 4 in [4, %d] (0 for the default)", c.ChunkBytes, MaxChunkBytes)
	case (c.ServerTLS == nil) != (c.ClientTLS == nil):
		return bad("ServerTLS and ClientTLS must be set together (mutual TLS) or both be nil")
	case len(c.PeerIDs) != 0 && len(c.PeerIDs) != c.World:
		return bad("PeerIDs has %d entries, want World (%d) or none", len(c.PeerIDs), c.World)
	}
	seen := make(map[string]int, len(c.Peers))
	for i, p := range c.Peers {
		if _, _, err := net.SplitHostPort(p); err != nil {
			return bad("Peers[%d] %q is not host:port: %v", i, p, err)
		}
		if j, dup := seen[p]; dup {
			return bad("Peers[%d] and Peers[%d] are both %q", j, i, p)
		}
		seen[p] = i
	}
	return nil
}

// withDefaults returns c with zero StepTimeout and ChunkBytes replaced by the
// defaults.
func (c Config) withDefaults() Config {
	if c.StepTimeout == 0 {
		c.StepTimeout = DefaultStepTimeout
	}
	if c.ChunkBytes == 0 {
		c.ChunkBytes = DefaultChunkBytes
	}
	c.Peers = append([]string(nil), c.Peers...)
	c.PeerIDs = append([]string(nil), c.PeerIDs...)
	return c
}

// left and right are the ring neighbours of rank r.
func (c Config) left() int  { return (c.Rank + c.World - 1) % c.World }
func (c Config) right() int { return (c.Rank + 1) % c.World }
