package main

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
	"github.com/loraft/loraft/coordinator"
	pb "github.com/loraft/loraft/proto/coordinatorpb"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// The linearizability check: clients launch, cancel and read sweeps against a
// coordinator group while it fails over, every call is recorded with its
// invocation and response times, and porcupine searches for a sequential
// order of the calls that respects real time and the model below.
//
// The model is per sweep name (porcupine checks each name's calls as its own
// history). Reads come from one linearizable ConsistentState call and are
// recorded as one read per name, so what is checked is that every sweep,
// taken alone, behaves like a single register-like object; that one read's
// names form a consistent cut across sweeps is not checked.

// linKind is what a recorded call did.
type linKind uint8

const (
	linLaunch linKind = iota // LaunchSweep(name, spec)
	linCancel                // CancelSweep(name)
	linRead                  // ConsistentState, projected on one name
)

func (k linKind) String() string {
	return [...]string{"launch", "cancel", "read"}[k]
}

// linInput is a recorded call's input: porcupine.Operation.Input.
type linInput struct {
	Kind linKind
	Name string
	Spec string // launches only
}

// linResult is how a call ended.
type linResult uint8

const (
	// linUnknown: a timeout, Unavailable or any other error that does not
	// say whether the call took effect. Such a call is recorded with a
	// return time of +infinity, so it may take effect at any point after
	// it was invoked, or never.
	linUnknown linResult = iota
	linOK
	linExists   // AlreadyExists: another spec holds the name (launch)
	linNotFound // NotFound: no such sweep (cancel)
)

func (r linResult) String() string {
	return [...]string{"unknown", "ok", "exists", "notfound"}[r]
}

// linOutput is a recorded call's outcome: porcupine.Operation.Output. A read
// that returned carries the sweep it saw.
type linOutput struct {
	Result linResult
	Sweep  linSweep // reads only
}

// linSweep is the model's state for one name, and what a read saw of it.
type linSweep struct {
	Exists, Cancelled bool
	Spec              string
}

func (s linSweep) String() string {
	switch {
	case !s.Exists:
		return "absent"
	case s.Cancelled:
		return fmt.Sprintf("cancelled %q", s.Spec)
	}
	return fmt.Sprintf("live %q", s.Spec)
}

// linNever is the return time of a call whose outcome is unknown.
const linNever = math.MaxInt64

// linModel is the coordinator FSM's sweep semantics, per name: a launch of
// a new name creates it; an identical launch again is a no-op; another spec
// under a taken name fails with AlreadyExists. A cancel of an existing sweep
// marks it cancelled (again: a no-op); of an absent one fails with NotFound.
// Reads return the sweep as it is. A call with an unknown outcome applies
// its effect, whatever it is, at the point the checker linearizes it.
var linModel = porcupine.Model{
	Partition: func(ops []porcupine.Operation) [][]porcupine.Operation {
		byName := map[string][]porcupine.Operation{}
		var names []string
		for _, op := range ops {
			n := op.Input.(linInput).Name
			if _, ok := byName[n]; !ok {
				names = append(names, n)
			}
			byName[n] = append(byName[n], op)
		}
		out := make([][]porcupine.Operation, 0, len(names))
		for _, n := range names {
			out = append(out, byName[n])
		}
		return out
	},
	Init: func() any { return linSweep{} },
	Step: func(state, input, output any) (bool, any) {
		s, in, out := state.(linSweep), input.(linInput), output.(linOutput)
		next, want := linStep(s, in)
		if in.Kind == linRead {
			return out.Result == linUnknown || (out.Result == linOK && out.Sweep == s), s
		}
		return out.Result == linUnknown || out.Result == want, next
	},
	DescribeOperation: func(input, output any) string {
		in, out := input.(linInput), output.(linOutput)
		switch in.Kind {
		case linLaunch:
			return fmt.Sprintf("launch(%s, %q) → %s", in.Name, in.Spec, out.Result)
		case linCancel:
			return fmt.Sprintf("cancel(%s) → %s", in.Name, out.Result)
		}
		if out.Result != linOK {
			return fmt.Sprintf("read(%s) → %s", in.Name, out.Result)
		}
		return fmt.Sprintf("read(%s) → %s", in.Name, out.Sweep)
	},
	DescribeState: func(state any) string { return state.(linSweep).String() },
}

// linStep is the sequential specification: the state after in, and the
// result the coordinator must give.
func linStep(s linSweep, in linInput) (linSweep, linResult) {
	switch in.Kind {
	case linLaunch:
		switch {
		case !s.Exists:
			return linSweep{Exists: true, Spec: in.Spec}, linOK
		case s.Spec == in.Spec:
			return s, linOK
		}
		return s, linExists
	case linCancel:
		if !s.Exists {
			return s, linNotFound
		}
		s.Cancelled = true
		return s, linOK
	}
	return s, linOK
}

// linSpecs are the two specs clients launch under each name, so that some
// launches repeat the sweep that holds the name and some conflict with it.
var linSpecs = [2]string{"spec: a\n", "spec: b\n"}

// linOpTimeout bounds one call, so that a call caught by a leader's stop
// ends with an unknown outcome rather than hanging the client.
const linOpTimeout = 3 * time.Second

// linHistory records the calls of the clients started by startLinClients.
type linHistory struct {
	base       time.Time // call and return times are monotonic nanoseconds since base
	wg         sync.WaitGroup
	nextClient atomic.Int64
	completed  atomic.Int64 // calls that returned ok, exists or notfound

	mu  sync.Mutex
	ops []porcupine.Operation
}

// startLinClients starts clients goroutines, each with its own
// coordinator.Client over all of addrs, that launch (one of two specs),
// cancel and read the sweeps prefix-0, prefix-1 and prefix-2 with random
// pauses of 5–30 ms until ctx ends, recording every call for
// checkLinearizable. Each call gets its own linOpTimeout deadline, not ctx's,
// so calls in flight when ctx ends still finish (Wait waits at most that
// long for them). The sweeps have no trials, so nothing is scheduled; their
// names must not be used by anything else on the cluster.
func startLinClients(t *testing.T, ctx context.Context, addrs []string, clients int, prefix string) *linHistory {
	t.Helper()
	names := make([]string, 3)
	for i := range names {
		names[i] = fmt.Sprintf("%s-%d", prefix, i)
	}
	h := &linHistory{base: time.Now()}
	for range clients {
		cl, err := coordinator.NewClient(addrs)
		if err != nil {
			t.Fatalf("linearizability client: %v", err)
		}
		h.wg.Add(1)
		go func() {
			defer h.wg.Done()
			defer cl.Close()
			h.client(ctx, cl, names)
		}()
	}
	return h
}

// client is one client's loop. Like a Jepsen process, a client whose call
// ended unknown continues under a new ClientId: its unknown call stays open
// forever, and porcupine's visualization draws one open call per client row.
func (h *linHistory) client(ctx context.Context, cl *coordinator.Client, names []string) {
	id := int(h.nextClient.Add(1) - 1)
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Duration(5+rand.IntN(26)) * time.Millisecond):
		}
		octx, cancel := context.WithTimeout(context.WithoutCancel(ctx), linOpTimeout)
		var unknown bool
		switch p := rand.IntN(100); {
		case p < 40:
			in := linInput{Kind: linLaunch, Name: names[rand.IntN(len(names))], Spec: linSpecs[rand.IntN(len(linSpecs))]}
			call := h.now()
			err := cl.LaunchSweep(octx, &pb.Sweep{Name: in.Name, SpecYaml: []byte(in.Spec), DatasetSha256: "lin"})
			unknown = h.record(id, in, call, linOutcome(err, codes.AlreadyExists, linExists))
		case p < 65:
			in := linInput{Kind: linCancel, Name: names[rand.IntN(len(names))]}
			call := h.now()
			err := cl.CancelSweep(octx, in.Name)
			unknown = h.record(id, in, call, linOutcome(err, codes.NotFound, linNotFound))
		default:
			call := h.now()
			st, err := cl.ConsistentState(octx)
			if err != nil {
				break // a read that did not return has no effect: left out of the history
			}
			ret := h.now()
			seen := map[string]linSweep{}
			for _, sw := range st.GetSweeps() {
				seen[sw.GetName()] = linSweep{Exists: true, Cancelled: sw.GetCancelled(), Spec: string(sw.GetSpecYaml())}
			}
			h.mu.Lock()
			for _, n := range names {
				h.ops = append(h.ops, porcupine.Operation{ClientId: id, Input: linInput{Kind: linRead, Name: n},
					Call: call, Output: linOutput{Result: linOK, Sweep: seen[n]}, Return: ret})
			}
			h.mu.Unlock()
			h.completed.Add(1)
		}
		cancel()
		if unknown {
			id = int(h.nextClient.Add(1) - 1)
		}
	}
}

// linOutcome classifies a write's error: nil is ok, the one refusal code
// the call can get is its definite result, anything else is unknown.
func linOutcome(err error, refusal codes.Code, refused linResult) linResult {
	switch {
	case err == nil:
		return linOK
	case status.Code(err) == refusal:
		return refused
	}
	return linUnknown
}

// record appends a write that returned now (or, unknown, never); it reports
// whether the outcome was unknown.
func (h *linHistory) record(id int, in linInput, call int64, r linResult) bool {
	ret := int64(linNever)
	if r != linUnknown {
		ret = h.now()
		h.completed.Add(1)
	}
	h.mu.Lock()
	h.ops = append(h.ops, porcupine.Operation{ClientId: id, Input: in, Call: call, Output: linOutput{Result: r}, Return: ret})
	h.mu.Unlock()
	return r == linUnknown
}

func (h *linHistory) now() int64 { return int64(time.Since(h.base)) }

// Completed returns how many calls have returned a definite outcome so far
// (a read counts once), for a test that waits for progress between faults.
func (h *linHistory) Completed() int64 { return h.completed.Load() }

// Wait waits for the clients to stop (after ctx ends) and returns the history.
func (h *linHistory) Wait() []porcupine.Operation {
	h.wg.Wait()
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]porcupine.Operation(nil), h.ops...)
}

// run lets the clients run for at least d and until they have completed
// calls more calls, failing the test if that takes 10 s longer than d: a
// test phase that ends on progress, not on time alone.
func (h *linHistory) run(t *testing.T, d time.Duration, calls int64) {
	t.Helper()
	want, start := h.Completed()+calls, time.Now()
	for time.Since(start) < d || h.Completed() < want {
		if time.Since(start) > d+10*time.Second {
			t.Fatalf("linearizability clients completed %d of %d calls in %v", calls-(want-h.Completed()), calls, time.Since(start).Round(time.Millisecond))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// linCheckTimeout bounds porcupine's search.
const linCheckTimeout = 30 * time.Second

// checkLinearizable checks ops against linModel. It fails the test when the
// history is not linearizable (writing porcupine's visualization to
// $LORAFT_LIN_OUT, or else to a temporary directory, and logging its path),
// when the checker times out, or when no write or no read completed — a
// history of unknown outcomes proves nothing. name labels the log lines and
// the visualization's file.
func checkLinearizable(t *testing.T, ops []porcupine.Operation, name string) {
	t.Helper()
	counts := map[string]int{}
	var okWrites, okReads int
	for _, op := range ops {
		in, out := op.Input.(linInput), op.Output.(linOutput)
		counts[in.Kind.String()+" "+out.Result.String()]++
		if out.Result != linUnknown {
			if in.Kind == linRead {
				okReads++
			} else {
				okWrites++
			}
		}
	}
	keys := make([]string, 0, len(counts))
	for k := range counts {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var summary []string
	for _, k := range keys {
		summary = append(summary, fmt.Sprintf("%s %d", k, counts[k]))
	}
	t.Logf("%s: checking %d calls: %s", name, len(ops), strings.Join(summary, ", "))
	if okWrites == 0 || okReads == 0 {
		t.Errorf("%s: %d writes and %d reads completed, want some of each: the history proves nothing", name, okWrites, okReads)
		return
	}
	start := time.Now()
	res, info := porcupine.CheckOperationsVerbose(linModel, ops, linCheckTimeout)
	t.Logf("%s: porcupine says %s in %v", name, res, time.Since(start).Round(time.Millisecond))
	switch res {
	case porcupine.Ok:
		return
	case porcupine.Unknown:
		t.Errorf("%s: the linearizability check timed out after %v: nothing proven", name, linCheckTimeout)
		return
	}
	dir := os.Getenv("LORAFT_LIN_OUT")
	if dir == "" {
		dir = t.TempDir()
	}
	path, err := writeLinVisualization(dir, t.Name()+"-"+name, info)
	if err != nil {
		t.Errorf("%s: history not linearizable; writing the visualization: %v", name, err)
		return
	}
	t.Errorf("%s: history not linearizable; visualization: %s", name, path)
}

// writeLinVisualization writes porcupine's HTML visualization of info under
// dir and returns its path.
func writeLinVisualization(dir, name string, info porcupine.LinearizationInfo) (string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	path := filepath.Join(dir, regexp.MustCompile(`[^A-Za-z0-9._-]+`).ReplaceAllString(name, "_")+".html")
	return path, porcupine.VisualizePath(linModel, info, path)
}

// TestLinearizabilityModel feeds hand-made histories to the model: it must
// accept the legal ones and catch the illegal ones, unknown outcomes
// included.
func TestLinearizabilityModel(t *testing.T) {
	const a, b = "spec: a\n", "spec: b\n"
	launch := func(name, spec string) linInput { return linInput{Kind: linLaunch, Name: name, Spec: spec} }
	cancel := func(name string) linInput { return linInput{Kind: linCancel, Name: name} }
	read := func(name string) linInput { return linInput{Kind: linRead, Name: name} }
	res := func(r linResult) linOutput { return linOutput{Result: r} }
	saw := func(s linSweep) linOutput { return linOutput{Result: linOK, Sweep: s} }
	absent, liveA, liveB, cancelledA := linSweep{}, linSweep{Exists: true, Spec: a}, linSweep{Exists: true, Spec: b}, linSweep{Exists: true, Cancelled: true, Spec: a}
	// op is one call by client c over [call, ret]; ret < 0 means it never returned.
	type op struct {
		c         int
		call, ret int64
		in        linInput
		out       linOutput
	}
	const never = -1
	for _, tc := range []struct {
		name  string
		ops   []op
		legal bool
	}{
		{"sequential", []op{
			{0, 0, 1, read("x"), saw(absent)},
			{0, 2, 3, cancel("x"), res(linNotFound)},
			{0, 4, 5, launch("x", a), res(linOK)},
			{0, 6, 7, read("x"), saw(liveA)},
			{0, 8, 9, launch("x", b), res(linExists)},
			{0, 10, 11, launch("x", a), res(linOK)},
			{0, 12, 13, cancel("x"), res(linOK)},
			{0, 14, 15, cancel("x"), res(linOK)},
			{0, 16, 17, launch("x", a), res(linOK)},
			{0, 18, 19, read("x"), saw(cancelledA)},
		}, true},
		{"stale read after a completed launch", []op{
			{0, 0, 1, launch("x", a), res(linOK)},
			{1, 2, 3, read("x"), saw(absent)},
		}, false},
		{"concurrent read may miss a launch", []op{
			{0, 0, 5, launch("x", a), res(linOK)},
			{1, 1, 2, read("x"), saw(absent)},
			{1, 6, 7, read("x"), saw(liveA)},
		}, true},
		{"read sees a launch before it was called", []op{
			{1, 0, 1, read("x"), saw(liveA)},
			{0, 2, 3, launch("x", a), res(linOK)},
		}, false},
		{"unknown launch, later read sees it", []op{
			{0, 0, never, launch("x", a), res(linUnknown)},
			{1, 2, 3, read("x"), saw(liveA)},
		}, true},
		{"unknown launch, later read does not see it", []op{
			{0, 0, never, launch("x", a), res(linUnknown)},
			{1, 2, 3, read("x"), saw(absent)},
		}, true},
		{"unknown launch seen, then unseen", []op{
			{0, 0, never, launch("x", a), res(linUnknown)},
			{1, 2, 3, read("x"), saw(liveA)},
			{1, 4, 5, read("x"), saw(absent)},
		}, false},
		{"unknown launch is not seen before its call", []op{
			{1, 0, 1, read("x"), saw(liveA)},
			{0, 2, never, launch("x", a), res(linUnknown)},
		}, false},
		{"unknown launch explains a conflict", []op{
			{0, 0, never, launch("x", a), res(linUnknown)},
			{1, 2, 3, launch("x", b), res(linExists)},
			{1, 4, 5, read("x"), saw(liveA)},
		}, true},
		{"conflict without a launch", []op{
			{0, 0, 1, launch("x", b), res(linExists)},
		}, false},
		{"two specs launched under one name", []op{
			{0, 0, 1, launch("x", a), res(linOK)},
			{1, 2, 3, launch("x", b), res(linOK)},
		}, false},
		{"concurrent conflicting launches: one wins", []op{
			{0, 0, 4, launch("x", a), res(linExists)},
			{1, 1, 5, launch("x", b), res(linOK)},
			{2, 6, 7, read("x"), saw(liveB)},
		}, true},
		{"read sees the losing spec", []op{
			{0, 0, 4, launch("x", a), res(linExists)},
			{1, 1, 5, launch("x", b), res(linOK)},
			{2, 6, 7, read("x"), saw(liveA)},
		}, false},
		{"unknown cancel of an absent sweep, then notfound", []op{
			{0, 0, never, cancel("x"), res(linUnknown)},
			{1, 2, 3, cancel("x"), res(linNotFound)},
			{1, 4, 5, read("x"), saw(absent)},
		}, true},
		{"notfound after a completed launch", []op{
			{0, 0, 1, launch("x", a), res(linOK)},
			{1, 2, 3, cancel("x"), res(linNotFound)},
		}, false},
		{"cancel ok on an absent sweep", []op{
			{0, 0, 1, cancel("x"), res(linOK)},
		}, false},
		{"unknown cancel takes effect between reads", []op{
			{0, 0, 1, launch("x", a), res(linOK)},
			{0, 2, never, cancel("x"), res(linUnknown)},
			{1, 3, 4, read("x"), saw(liveA)},
			{1, 5, 6, read("x"), saw(cancelledA)},
			{1, 7, 8, read("x"), saw(cancelledA)},
		}, true},
		{"cancelled sweep uncancelled", []op{
			{0, 0, 1, launch("x", a), res(linOK)},
			{0, 2, never, cancel("x"), res(linUnknown)},
			{1, 3, 4, read("x"), saw(cancelledA)},
			{1, 5, 6, read("x"), saw(liveA)},
		}, false},
		{"names are independent", []op{
			{0, 0, 1, launch("x", a), res(linOK)},
			{1, 2, 3, read("y"), saw(absent)},
			{1, 4, 5, launch("y", b), res(linOK)},
			{1, 6, 7, read("x"), saw(liveA)},
			{1, 8, 9, read("y"), saw(liveB)},
		}, true},
		{"one name's violation fails the history", []op{
			{0, 0, 1, launch("x", a), res(linOK)},
			{1, 2, 3, launch("y", b), res(linOK)},
			{1, 4, 5, read("y"), saw(absent)},
		}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var ops []porcupine.Operation
			for _, o := range tc.ops {
				ret := o.ret
				if ret == never {
					ret = linNever
				}
				ops = append(ops, porcupine.Operation{ClientId: o.c, Input: o.in, Call: o.call, Output: o.out, Return: ret})
			}
			res, info := porcupine.CheckOperationsVerbose(linModel, ops, 10*time.Second)
			if want := map[bool]porcupine.CheckResult{true: porcupine.Ok, false: porcupine.Illegal}[tc.legal]; res != want {
				t.Fatalf("porcupine: %s, want %s", res, want)
			}
			if !tc.legal {
				// The failure report must render, +infinity returns included.
				path, err := writeLinVisualization(t.TempDir(), tc.name, info)
				if err != nil {
					t.Fatal(err)
				}
				if fi, err := os.Stat(path); err != nil || fi.Size() == 0 {
					t.Fatalf("visualization %s: %v, size 0", path, err)
				}
			}
		})
	}
}

// TestLinearizableUnderLeaderStop runs three in-process coordinators (fast
// raft timeouts) and four clients; once the clients have made progress
// (at least 1 s) the leader is stopped, and once they have made progress
// again under a new leader (at least 2 s) they stop. The history, unknown
// outcomes included, must be linearizable.
func TestLinearizableUnderLeaderStop(t *testing.T) {
	peers, apiAddrs := loopbackPeers(3, freePorts(t, 6))
	members := make([]*coordinatorMember, len(peers))
	t.Cleanup(func() {
		for _, m := range members {
			if m != nil {
				m.Close()
			}
		}
	})
	for i, p := range peers {
		m, err := startCoordinator(context.Background(), coordinatorOptions{id: p.id, raftAddr: p.raft, apiAddr: p.api,
			dir: t.TempDir(), peers: peers, profile: "fast", lease: 3 * time.Second})
		if err != nil {
			t.Fatalf("coordinator %s: %v", p.id, err)
		}
		members[i] = m
	}

	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	h := startLinClients(t, ctx, apiAddrs, 4, "lin")
	t.Cleanup(func() { stop(); h.Wait() }) // before the coordinators close, should the test fail early
	h.run(t, time.Second, 40)

	leader := -1
	deadline := time.Now().Add(5 * time.Second)
	for leader < 0 {
		for i, m := range members {
			if m.node.IsLeader() {
				leader = i
			}
		}
		if leader < 0 {
			if time.Now().After(deadline) {
				t.Fatal("no coordinator leads")
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	before := h.Completed()
	if err := members[leader].Close(); err != nil {
		t.Logf("stopping leader %s: %v", peers[leader].id, err)
	}
	members[leader] = nil
	t.Logf("stopped leader %s after %d completed calls", peers[leader].id, before)
	h.run(t, 2*time.Second, 40)

	stop()
	checkLinearizable(t, h.Wait(), "leader-stop")
}
