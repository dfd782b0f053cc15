package coordinator

import "google.golang.org/grpc"

// gRPC message limits of the coordinator API, chosen rather than left at
// gRPC's defaults (4 MiB received, unlimited sent).
//
// The largest request is LaunchSweep: a spec of at most MaxSpecYAMLBytes
// (1 MiB) and up to DefaultMaxTrialsPerSweep (10,000) trials of a few
// hundred bytes each at most (names ≤ MaxNameLen) — about 5 MiB at worst,
// 2 MiB for a real 10,000-trial grid. MaxRequestBytes leaves room for
// that and a raised MaxTrialsPerSweep, and it bounds what one caller can
// make the leader allocate (and replicate as one raft entry).
//
// The list RPCs are paged (MaxPageSize summaries without histories, well
// under 1 MiB), so only GetState and GetSweep, kept for small states and
// debugging, can answer with more: MaxResponseBytes lets them serve a
// state of several 10,000-trial sweeps with their metric histories, and a
// state past it fails with ResourceExhausted instead of eating memory.
const (
	MaxRequestBytes  = 16 << 20
	MaxResponseBytes = 64 << 20
)

// serverMsgSizes are the API server's limits.
func serverMsgSizes() []grpc.ServerOption {
	return []grpc.ServerOption{grpc.MaxRecvMsgSize(MaxRequestBytes), grpc.MaxSendMsgSize(MaxResponseBytes)}
}

// clientMsgSizes are a Client's limits, the server's mirrored.
var clientMsgSizes = grpc.WithDefaultCallOptions(grpc.MaxCallSendMsgSize(MaxRequestBytes), grpc.MaxCallRecvMsgSize(MaxResponseBytes))
