package coordinator

import (
	"github.com/loraft/loraft/coordinator/authz"
	pb "github.com/loraft/loraft/proto/coordinatorpb"
)

// authzState answers the authorization policy's questions from the node's
// applied state.
type authzState struct{ n *Node }

var _ authz.State = authzState{}

func (s authzState) Leads() bool { return s.n.IsLeader() }

func (s authzState) TrialAssignment(trial string) (trainers []string, gen uint64, ok bool) {
	s.n.view(func(f *fsm) {
		var t *pb.Trial
		if t, ok = f.trials[trial]; ok {
			trainers, gen = append([]string(nil), t.GetTrainers()...), t.GetGeneration()
		}
	})
	return trainers, gen, ok
}
