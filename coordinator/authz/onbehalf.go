package authz

import (
	"context"
	"fmt"
	"net/url"

	"github.com/loraft/loraft/internal/pki"
	"google.golang.org/grpc/metadata"
)

// Metadata keys with which a coordinator forwards a write it authorized
// for someone else (a browser on a follower's dashboard) to the leader:
// the caller's name and role. The leader honours them only from a
// coordinator's certificate (coordinators are trusted with raft, so with
// the whole state anyway): anyone else presenting them is refused.
const (
	OnBehalfOfKey     = "loraft-on-behalf-of"
	OnBehalfOfRoleKey = "loraft-on-behalf-of-role"
)

// relayable are the roles a coordinator may act for: the dashboard's
// callers. A trainer's rights depend on its own id and address, and a
// coordinator needs no relay.
var relayable = []pki.Role{pki.RoleViewer, pki.RoleOperator}

// OnBehalfOf returns ctx with outgoing metadata saying that the RPCs made
// with it are made for who (a name for the audit log) with role. Names
// are escaped: metadata values must be printable ASCII.
func OnBehalfOf(ctx context.Context, who string, role pki.Role) context.Context {
	return metadata.AppendToOutgoingContext(ctx, OnBehalfOfKey, url.QueryEscape(who), OnBehalfOfRoleKey, string(role))
}

// relay is who an RPC is made for when its metadata says so.
type relay struct {
	present bool
	who     string
	role    pki.Role
}

// relayed reads the OnBehalfOf metadata of an incoming RPC.
func relayed(ctx context.Context) (relay, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	whos, roles := md.Get(OnBehalfOfKey), md.Get(OnBehalfOfRoleKey)
	if len(whos) == 0 && len(roles) == 0 {
		return relay{}, nil
	}
	if len(whos) != 1 || len(roles) != 1 {
		return relay{present: true}, fmt.Errorf("%w: want one %s and one %s", ErrDenied, OnBehalfOfKey, OnBehalfOfRoleKey)
	}
	who, err := url.QueryUnescape(whos[0])
	if err != nil || who == "" {
		return relay{present: true}, fmt.Errorf("%w: malformed %s", ErrDenied, OnBehalfOfKey)
	}
	return relay{present: true, who: cut(who), role: pki.Role(roles[0])}, nil
}

// delegate applies a relay to the connection's caller. Without one nothing
// changes. With one, only a coordinator's certificate may carry it, for a
// relayable role: the caller becomes the relayed one (who and identity)
// and via names the coordinator. On a connection without TLS everyone may
// do everything anyway; the claim is kept for the log, marked unverified.
func delegate(ctx context.Context, who string, id pki.Identity, secure bool) (string, pki.Identity, []any, error) {
	r, err := relayed(ctx)
	switch {
	case !r.present:
		return who, id, nil, nil
	case !secure:
		if err != nil {
			return who, id, nil, nil // no identity to refuse on a plain connection
		}
		return who, id, []any{"on_behalf_of", r.who + " (unverified)"}, nil
	case id.Role != pki.RoleCoordinator:
		return who, id, nil, fmt.Errorf("%w: only a coordinator may act on behalf of another caller (%s metadata)", ErrDenied, OnBehalfOfKey)
	case err != nil:
		return who, id, nil, err
	}
	ok := false
	for _, role := range relayable {
		ok = ok || r.role == role
	}
	if !ok {
		return who, id, nil, fmt.Errorf("%w: a coordinator may not act for role %q", ErrDenied, cut(string(r.role)))
	}
	return r.who, pki.Identity{Role: r.role, ID: r.who}, []any{"via", id.String()}, nil
}
