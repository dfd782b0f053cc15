package authz

import (
	"testing"

	"github.com/loraft/loraft/internal/pki"
	pb "github.com/loraft/loraft/proto/coordinatorpb"
)

// TestListAndDeleteRoles: every role that reads may page through sweeps
// and trials; only an operator deletes a sweep; a trainer does neither.
func TestListAndDeleteRoles(t *testing.T) {
	for _, tc := range []struct {
		role   pki.Role
		method string
		ok     bool
	}{
		{pki.RoleViewer, pb.Coordinator_ListSweeps_FullMethodName, true},
		{pki.RoleViewer, pb.Coordinator_ListTrials_FullMethodName, true},
		{pki.RoleViewer, pb.Coordinator_DeleteSweep_FullMethodName, false},
		{pki.RoleOperator, pb.Coordinator_ListSweeps_FullMethodName, true},
		{pki.RoleOperator, pb.Coordinator_DeleteSweep_FullMethodName, true},
		{pki.RoleCoordinator, pb.Coordinator_ListTrials_FullMethodName, true},
		{pki.RoleCoordinator, pb.Coordinator_DeleteSweep_FullMethodName, false},
		{pki.RoleTrainer, pb.Coordinator_ListSweeps_FullMethodName, false},
		{pki.RoleTrainer, pb.Coordinator_ListTrials_FullMethodName, false},
		{pki.RoleTrainer, pb.Coordinator_DeleteSweep_FullMethodName, false},
	} {
		if got := Allowed(tc.role, tc.method); got != tc.ok {
			t.Errorf("Allowed(%s, %s) = %v, want %v", tc.role, tc.method, got, tc.ok)
		}
	}
	if !policy[pb.Coordinator_DeleteSweep_FullMethodName].write {
		t.Error("DeleteSweep is not audited as a write")
	}
}
