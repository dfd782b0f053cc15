// Package dashboard is the live web dashboard every coordinator serves
// next to its metrics: server-rendered page shells, a little vanilla
// JavaScript, JSON under /api/ and server-sent events for a sweep's live
// state. Everything it sends is embedded in the binary (go:embed),
// including a vendored uPlot for the charts; nothing is fetched at run time.
//
// Pages: the sweeps, one sweep (trials table, curves, rank × alpha heat map,
// early-stopping and requeue events), one trial (checkpoints, events, the
// `loraft adapter pull` command), the trainers and the raft group.
//
// Who may do what: a caller is identified by a bearer token (the
// Authorization header, or the cookie the login form sets), else by a
// client certificate (internal/pki identities), else, on a loopback
// connection without TLS (loraft local), as the machine's own user, who is
// an operator. Viewers, operators and coordinators read; only operators
// cancel sweeps and resume runs, through the same write path as the gRPC
// API, and every such write is written to the audit log.
//
// The package reads the coordinator through Backend, which the coordinator
// implements; it imports nothing of the coordinator's.
package dashboard
