package authz

import (
	"bytes"
	"context"
	"crypto/tls"
	"log/slog"
	"strings"
	"testing"

	"github.com/loraft/loraft/internal/pki"
	pb "github.com/loraft/loraft/proto/coordinatorpb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// relayFrom returns ctx as a server sees an RPC made with out's outgoing
// metadata (OnBehalfOf's, or any a client forged).
func relayFrom(ctx, out context.Context) context.Context {
	md, _ := metadata.FromOutgoingContext(out)
	return metadata.NewIncomingContext(ctx, md)
}

// TestOnBehalfOf: a coordinator's certificate may carry the OnBehalfOf
// metadata of a viewer or operator it authorized, and the call is then
// authorized and audited as that caller's, via the coordinator; nobody
// else may carry it (not even an operator, who could make the call
// itself), a coordinator may not relay a trainer or a coordinator, and
// malformed metadata is refused. Without TLS it changes nothing but the
// log, where the claim is marked unverified.
func TestOnBehalfOf(t *testing.T) {
	n2 := pki.Identity{Role: pki.RoleCoordinator, ID: "n2"}
	alice := func(role pki.Role) context.Context {
		return OnBehalfOf(context.Background(), "alice@example (token)", role)
	}
	twice := metadata.AppendToOutgoingContext(alice(pki.RoleOperator), OnBehalfOfKey, "mallory")
	stranger := peer.NewContext(context.Background(), &peer.Peer{AuthInfo: credentials.TLSInfo{State: tls.ConnectionState{}}})
	for _, tc := range []struct {
		name   string
		conn   context.Context // the connection's peer
		relay  context.Context // the outgoing metadata
		method string
		ok     bool
		log    []string // in the audit or refusal line
	}{
		{"coordinator for an operator", tlsContext(t, n2), alice(pki.RoleOperator), pb.Coordinator_CancelSweep_FullMethodName, true,
			[]string{`msg=audit who="alice@example (token)" via=loraft://coordinator/n2 method=CancelSweep sweep=s code=OK`}},
		{"coordinator for a viewer's read", tlsContext(t, n2), alice(pki.RoleViewer), pb.Coordinator_GetSweep_FullMethodName, true, nil},
		{"coordinator for a viewer's write", tlsContext(t, n2), alice(pki.RoleViewer), pb.Coordinator_CancelSweep_FullMethodName, false,
			[]string{`who="alice@example (token)" via=loraft://coordinator/n2 method=CancelSweep`, "role viewer, want operator"}},
		{"coordinator for a trainer", tlsContext(t, n2), alice(pki.RoleTrainer), pb.Coordinator_CancelSweep_FullMethodName, false, []string{`may not act for role \"trainer\"`}},
		{"coordinator for a coordinator", tlsContext(t, n2), alice(pki.RoleCoordinator), pb.Coordinator_CancelSweep_FullMethodName, false, []string{`may not act for role \"coordinator\"`}},
		{"coordinator, two names", tlsContext(t, n2), twice, pb.Coordinator_CancelSweep_FullMethodName, false, []string{"want one"}},
		{"operator", tlsContext(t, pki.Identity{Role: pki.RoleOperator, ID: "ops"}), alice(pki.RoleOperator), pb.Coordinator_CancelSweep_FullMethodName, false,
			[]string{"who=loraft://operator/ops", "only a coordinator may act on behalf"}},
		{"viewer", tlsContext(t, pki.Identity{Role: pki.RoleViewer, ID: "v"}), alice(pki.RoleOperator), pb.Coordinator_CancelSweep_FullMethodName, false,
			[]string{"who=loraft://viewer/v", "only a coordinator may act on behalf"}},
		{"trainer", tlsContext(t, pki.Identity{Role: pki.RoleTrainer, ID: "t1"}), alice(pki.RoleOperator), pb.Coordinator_CancelSweep_FullMethodName, false,
			[]string{"who=loraft://trainer/t1", "only a coordinator may act on behalf"}},
		{"stranger", stranger, alice(pki.RoleOperator), pb.Coordinator_CancelSweep_FullMethodName, false, []string{"who=unidentified"}},
		{"plain connection", context.Background(), alice(pki.RoleOperator), pb.Coordinator_CancelSweep_FullMethodName, true,
			[]string{`who=insecure on_behalf_of="alice@example (token) (unverified)"`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var logs bytes.Buffer
			icpt := UnaryInterceptor(Config{State: fakeState{leads: true}, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
			called := false
			_, err := icpt(relayFrom(tc.conn, tc.relay), &pb.CancelSweepRequest{Name: "s"}, &grpc.UnaryServerInfo{FullMethod: tc.method},
				func(context.Context, any) (any, error) { called = true; return &pb.CancelSweepResponse{}, nil })
			if tc.ok != (err == nil) || called != tc.ok {
				t.Fatalf("err %v, handler called %v; want allowed=%v", err, called, tc.ok)
			}
			if !tc.ok && status.Code(err) != codes.PermissionDenied {
				t.Fatalf("%v, want PermissionDenied", err)
			}
			for _, want := range tc.log {
				if !strings.Contains(logs.String(), want) {
					t.Errorf("log lacks %q:\n%s", want, logs.String())
				}
			}
		})
	}
}
