// Package proccluster runs a loraft cluster as real processes on loopback:
// coordinators, trainers and a MinIO store, each a [proc.Proc] with its own
// log file, ports (internal/loopback) and state directory, which a caller
// can pause, resume, kill and restart; and it waits on the cluster through
// the coordinators' API (a leader, a state that holds, every member
// healthy).
//
// The cluster tests, the chaos suite and the failover benchmark of the
// shipped binary all go through it, so it never imports testing: every call
// returns an error, and tests wrap it. The loraft binary to run is a
// parameter ([proc.Binary]): the benchmarks pass os.Executable(), the tests
// re-execute their own test binary with LORAFT_TEST_MAIN=1 in its
// environment.
package proccluster
