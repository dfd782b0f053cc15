// Package coordinator owns loraft's replicated state: a hashicorp/raft group
// whose FSM holds sweeps, trials, trainers, assignments and checkpoint
// references, the gRPC API served by each node, and the leader-side scheduler.
// It never touches tensors.
//
// Nothing from the network is trusted: the server checks every field of
// every request against the bounds in validate.go before it proposes
// anything (a refusal is InvalidArgument naming the field and adds no raft
// entry), and the FSM checks every command again, so a refused command
// changes nothing. The scheduler skips a trial it cannot place instead of
// stopping there.
package coordinator
