// Package coordinator owns loraft's replicated state: a hashicorp/raft group
// whose FSM holds sweeps, trials, trainers, assignments and checkpoint
// references, the gRPC API served by each node, and the leader-side scheduler.
// It never touches tensors.
package coordinator
