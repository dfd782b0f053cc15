// Package authz decides who may call which coordinator RPC (DESIGN.md
// invariant 9) and writes the audit log. Its interceptor takes the
// caller's role and id from the verified client certificate's URI SAN
// (loraft://<role>/<id>, see internal/pki):
//
//   - viewer: GetState, GetSweep, BestTrial, ListSweeps, ListTrials,
//     TrainerLeases
//   - coordinator: the viewer's reads (coordinators need no other API rights;
//     they talk to each other over raft), and any call on behalf of a viewer
//     or operator it has authorized (OnBehalfOf: a follower's dashboard
//     forwarding to the leader), checked and audited as that caller's,
//     "via" the coordinator
//   - operator: the reads, LaunchSweep, CancelSweep, DeleteSweep, ResumeRun,
//     AddVoter, RemoveVoter
//   - trainer: RegisterTrainer and Heartbeat as the id in its certificate,
//     registering only an all-reduce address whose host the certificate
//     names (a DNS or IP SAN); ReportCheckpoint and ReportResult only for a
//     trial the replicated state assigns to it
//
// OnBehalfOf metadata from any other certificate is refused.
// A method not in the table is refused. A refusal is codes.PermissionDenied,
// a WARN line (who, method, why) and never reaches the handler, so nothing
// changes. A connection without TLS (the loopback-only mode) is allowed
// everything and named "insecure".
//
// Every write RPC (one that may change the replicated state) is logged once
// it is answered, at INFO with the message "audit": who, method, the
// request's key fields, its code and its duration. Heartbeats renew soft
// state only and are not audited (their refusals are logged).
package authz

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/loraft/loraft/internal/pki"
	pb "github.com/loraft/loraft/proto/coordinatorpb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// State is what the policy asks of the replicated state. Implementations
// must be safe for concurrent use.
type State interface {
	// Leads reports whether this node leads: only the leader's applied
	// state is authoritative about assignments (a follower refuses writes
	// anyway and sends the caller to the leader).
	Leads() bool
	// TrialAssignment returns the trainers a trial is assigned to and its
	// generation; ok is false for an unknown trial.
	TrialAssignment(trial string) (trainers []string, generation uint64, ok bool)
}

// Config configures the interceptor.
type Config struct {
	// State answers questions about assignments (required).
	State State
	// Logger receives refusals and the audit log (nil: slog.Default()).
	Logger *slog.Logger
}

// Insecure is the caller's name on a connection without TLS.
const Insecure = "insecure"

// ErrDenied is wrapped by every refusal's reason.
var ErrDenied = errors.New("permission denied")

type rule struct {
	roles []pki.Role
	write bool
}

var (
	reads    = []pki.Role{pki.RoleViewer, pki.RoleOperator, pki.RoleCoordinator}
	operator = []pki.Role{pki.RoleOperator}
	trainer  = []pki.Role{pki.RoleTrainer}
)

// policy maps every Coordinator method to who may call it.
var policy = map[string]rule{
	pb.Coordinator_GetState_FullMethodName:         {reads, false},
	pb.Coordinator_GetSweep_FullMethodName:         {reads, false},
	pb.Coordinator_BestTrial_FullMethodName:        {reads, false},
	pb.Coordinator_ListSweeps_FullMethodName:       {reads, false},
	pb.Coordinator_ListTrials_FullMethodName:       {reads, false},
	pb.Coordinator_TrainerLeases_FullMethodName:    {reads, false},
	pb.Coordinator_DeleteSweep_FullMethodName:      {operator, true},
	pb.Coordinator_LaunchSweep_FullMethodName:      {operator, true},
	pb.Coordinator_CancelSweep_FullMethodName:      {operator, true},
	pb.Coordinator_ResumeRun_FullMethodName:        {operator, true},
	pb.Coordinator_AddVoter_FullMethodName:         {operator, true},
	pb.Coordinator_RemoveVoter_FullMethodName:      {operator, true},
	pb.Coordinator_RegisterTrainer_FullMethodName:  {trainer, true},
	pb.Coordinator_Heartbeat_FullMethodName:        {trainer, false},
	pb.Coordinator_ReportCheckpoint_FullMethodName: {trainer, true},
	pb.Coordinator_ReportResult_FullMethodName:     {trainer, true},
}

// Allowed reports whether role may call method at all (before the
// per-request checks of trainers); for documentation and tests.
func Allowed(role pki.Role, method string) bool {
	r, ok := policy[method]
	return ok && slices.Contains(r.roles, role)
}

// UnaryInterceptor returns the interceptor that authorizes and audits
// every unary RPC.
func UnaryInterceptor(cfg Config) grpc.UnaryServerInterceptor {
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	a := &authorizer{state: cfg.State, log: log}
	return a.intercept
}

type authorizer struct {
	state State
	log   *slog.Logger
}

func (a *authorizer) intercept(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	start := time.Now()
	who, id, secure, err := caller(ctx)
	var via []any // who relayed the call (OnBehalfOf), for the logs
	if err == nil {
		who, id, via, err = delegate(ctx, who, id, secure)
	}
	r, known := policy[info.FullMethod]
	if err == nil && secure {
		err = a.check(id, info.FullMethod, r, known, req)
	}
	if err == nil && secure {
		err = registerAddress(ctx, req)
	}
	var resp any
	if err != nil {
		method := methodName(info.FullMethod)
		a.log.Warn("permission denied", append(append([]any{"who", who}, via...), "method", method, "why", err.Error())...)
		err = status.Errorf(codes.PermissionDenied, "%s may not call %s: %v", who, method, err)
	} else {
		resp, err = handler(ctx, req)
	}
	if r.write || !known {
		attrs := append(append([]any{"who", who}, via...), "method", methodName(info.FullMethod))
		for i, f := range fields(req) {
			if s, ok := f.(string); ok && i%2 == 1 {
				f = cut(s)
			}
			attrs = append(attrs, f)
		}
		attrs = append(attrs, "code", status.Code(err).String(), "duration", time.Since(start))
		a.log.Info("audit", attrs...)
	}
	return resp, err
}

// caller names the peer: its certificate's identity, or Insecure without
// TLS. A TLS peer without a loraft identity is an error.
func caller(ctx context.Context) (who string, id pki.Identity, secure bool, err error) {
	p, ok := peer.FromContext(ctx)
	if !ok || p.AuthInfo == nil {
		return Insecure, id, false, nil
	}
	ti, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok {
		return Insecure, id, false, nil
	}
	id, err = pki.FromConnectionState(ti.State)
	if err != nil {
		who = "unidentified"
		if len(ti.State.PeerCertificates) > 0 {
			who = "unidentified (CN " + ti.State.PeerCertificates[0].Subject.CommonName + ")"
		}
		return who, id, true, fmt.Errorf("%w: %w", ErrDenied, err)
	}
	return id.String(), id, true, nil
}

// check applies the policy to an identified caller.
func (a *authorizer) check(id pki.Identity, method string, r rule, known bool, req any) error {
	if !known {
		return fmt.Errorf("%w: no rule for this method", ErrDenied)
	}
	if !slices.Contains(r.roles, id.Role) {
		return fmt.Errorf("%w: role %s, want %s", ErrDenied, id.Role, roleList(r.roles))
	}
	if id.Role != pki.RoleTrainer {
		return nil
	}
	switch m := req.(type) {
	case *pb.RegisterTrainerRequest:
		return sameTrainer(id, m.GetTrainer().GetId())
	case *pb.HeartbeatRequest:
		return sameTrainer(id, m.GetTrainerId())
	case *pb.ReportCheckpointRequest:
		return a.assigned(id, m.GetTrial(), m.GetGeneration())
	case *pb.ReportResultRequest:
		return a.assigned(id, m.GetTrial(), m.GetGeneration())
	}
	return fmt.Errorf("%w: unexpected request %T", ErrDenied, req)
}

func sameTrainer(id pki.Identity, trainerID string) error {
	if trainerID != id.ID {
		return fmt.Errorf("%w: trainer %q in the request, but the certificate is %s's", ErrDenied, trainerID, id.ID)
	}
	return nil
}

// assigned lets a trainer report only for a trial assigned to it. On a
// follower the check is left to the handler, which refuses the write and
// names the leader; a report of a generation older than the trial's
// current one also goes through, as the handler fences it without a change.
func (a *authorizer) assigned(id pki.Identity, trial string, gen uint64) error {
	if !a.state.Leads() {
		return nil
	}
	trainers, current, ok := a.state.TrialAssignment(trial)
	switch {
	case !ok:
		return fmt.Errorf("%w: trial %q is unknown", ErrDenied, trial)
	case slices.Contains(trainers, id.ID):
		return nil
	case gen < current:
		return nil
	}
	return fmt.Errorf("%w: trial %q (generation %d) is not assigned to trainer %s", ErrDenied, trial, current, id.ID)
}

func roleList(roles []pki.Role) string {
	s := make([]string, len(roles))
	for i, r := range roles {
		s[i] = string(r)
	}
	return strings.Join(s, " or ")
}

// maxField bounds a string field in the audit log (the handler validates
// it after the log has seen it).
const maxField = 128

func cut(s string) string {
	if len(s) <= maxField {
		return s
	}
	return s[:maxField] + "…"
}

func methodName(full string) string { return full[strings.LastIndexByte(full, '/')+1:] }

// fields are the request's key fields for the audit log.
func fields(req any) []any {
	switch m := req.(type) {
	case *pb.LaunchSweepRequest:
		return []any{"sweep", m.GetSweep().GetName(), "dataset", m.GetDataset().GetSha256()}
	case *pb.CancelSweepRequest:
		return []any{"sweep", m.GetName()}
	case *pb.DeleteSweepRequest:
		return []any{"sweep", m.GetName()}
	case *pb.ResumeRunRequest:
		return []any{"trial", m.GetRun()}
	case *pb.AddVoterRequest:
		return []any{"member", m.GetMember().GetId(), "raft_addr", m.GetMember().GetRaftAddress(), "api_addr", m.GetMember().GetApiAddress()}
	case *pb.RemoveVoterRequest:
		return []any{"member", m.GetId()}
	case *pb.RegisterTrainerRequest:
		return []any{"trainer", m.GetTrainer().GetId(), "addr", m.GetTrainer().GetAddress()}
	case *pb.ReportCheckpointRequest:
		return []any{"trial", m.GetTrial(), "generation", m.GetGeneration(), "step", m.GetStep()}
	case *pb.ReportResultRequest:
		return []any{"trial", m.GetTrial(), "generation", m.GetGeneration(), "state", m.GetState().String()}
	}
	return nil
}
