package authz

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"log/slog"
	"strings"
	"testing"

	"github.com/loraft/loraft/internal/pki"
	pb "github.com/loraft/loraft/proto/coordinatorpb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// TestEveryMethodHasARule: each Coordinator RPC is in the policy, so none
// is refused for want of a rule, and the table is what the package says.
func TestEveryMethodHasARule(t *testing.T) {
	for _, m := range pb.Coordinator_ServiceDesc.Methods {
		full := "/" + pb.Coordinator_ServiceDesc.ServiceName + "/" + m.MethodName
		if _, ok := policy[full]; !ok {
			t.Errorf("%s has no rule", full)
		}
	}
	if len(pb.Coordinator_ServiceDesc.Streams) != 0 {
		t.Error("the Coordinator service has streams: give them a stream interceptor")
	}
	if !Allowed(pki.RoleViewer, pb.Coordinator_GetState_FullMethodName) || Allowed(pki.RoleViewer, pb.Coordinator_LaunchSweep_FullMethodName) ||
		Allowed(pki.RoleCoordinator, pb.Coordinator_AddVoter_FullMethodName) || Allowed(pki.RoleTrainer, pb.Coordinator_GetState_FullMethodName) {
		t.Error("the policy table does not match the package doc")
	}
}

type fakeState struct {
	leads    bool
	trainers []string
	gen      uint64
}

func (f fakeState) Leads() bool { return f.leads }
func (f fakeState) TrialAssignment(trial string) ([]string, uint64, bool) {
	if trial != "tr" {
		return nil, 0, false
	}
	return f.trainers, f.gen, true
}

func tlsContext(t *testing.T, id pki.Identity) context.Context {
	ca, err := pki.NewCA("t", 0)
	if err != nil {
		t.Fatal(err)
	}
	l, err := ca.Issue(id, nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	cs := tls.ConnectionState{VerifiedChains: [][]*x509.Certificate{{l.Cert, ca.Cert}}, PeerCertificates: []*x509.Certificate{l.Cert}}
	return peer.NewContext(context.Background(), &peer.Peer{AuthInfo: credentials.TLSInfo{State: cs}})
}

// TestTrainerReports: a trainer reports for a trial assigned to it; not
// for another's (unless the report is of an older generation, which the
// handler fences), not for an unknown trial; a follower leaves the check
// to the handler, which sends the caller to the leader.
func TestTrainerReports(t *testing.T) {
	req := func(gen uint64) *pb.ReportResultRequest {
		return &pb.ReportResultRequest{Trial: "tr", Generation: gen, State: pb.TrialState_TRIAL_STATE_FAILED}
	}
	for _, tc := range []struct {
		name  string
		state fakeState
		req   *pb.ReportResultRequest
		ok    bool
	}{
		{"assigned", fakeState{true, []string{"a", "t1"}, 3}, req(3), true},
		{"another's", fakeState{true, []string{"a"}, 3}, req(3), false},
		{"another's, newer generation", fakeState{true, []string{"a"}, 3}, req(4), false},
		{"an older generation", fakeState{true, []string{"a"}, 3}, req(2), true},
		{"unknown trial", fakeState{true, nil, 0}, &pb.ReportResultRequest{Trial: "nope", Generation: 1}, false},
		{"on a follower", fakeState{false, []string{"a"}, 3}, req(3), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var logs bytes.Buffer
			icpt := UnaryInterceptor(Config{State: tc.state, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
			called := false
			_, err := icpt(tlsContext(t, pki.Identity{Role: pki.RoleTrainer, ID: "t1"}), tc.req,
				&grpc.UnaryServerInfo{FullMethod: pb.Coordinator_ReportResult_FullMethodName},
				func(context.Context, any) (any, error) { called = true; return &pb.ReportResultResponse{}, nil })
			if tc.ok != (err == nil) || called != tc.ok {
				t.Fatalf("err %v, handler called %v; want allowed=%v", err, called, tc.ok)
			}
			if !tc.ok && status.Code(err) != codes.PermissionDenied {
				t.Fatalf("%v, want PermissionDenied", err)
			}
			if !strings.Contains(logs.String(), "msg=audit") || !strings.Contains(logs.String(), "who=loraft://trainer/t1") {
				t.Fatalf("no audit line: %s", logs.String())
			}
		})
	}
}

// TestInsecureAllowsEverything: without TLS every call goes through and
// writes are audited as "insecure".
func TestInsecureAllowsEverything(t *testing.T) {
	var logs bytes.Buffer
	icpt := UnaryInterceptor(Config{State: fakeState{}, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	_, err := icpt(context.Background(), &pb.CancelSweepRequest{Name: "s"}, &grpc.UnaryServerInfo{FullMethod: pb.Coordinator_CancelSweep_FullMethodName},
		func(context.Context, any) (any, error) { return nil, errors.New("refused by the handler") })
	if err == nil || status.Code(err) == codes.PermissionDenied {
		t.Fatalf("%v, want the handler's answer", err)
	}
	if !strings.Contains(logs.String(), "who=insecure") || !strings.Contains(logs.String(), "sweep=s") {
		t.Fatalf("audit line: %s", logs.String())
	}
}
