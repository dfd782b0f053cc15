package coordinatortest

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
	"google.golang.org/grpc"
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

// History records the calls of the clients started by StartClients.
type History struct {
	base       time.Time // call and return times are monotonic nanoseconds since base
	wg         sync.WaitGroup
	nextClient atomic.Int64
	completed  atomic.Int64 // calls that returned ok, exists or notfound

	mu  sync.Mutex
	ops []porcupine.Operation
}

// StartClients starts clients goroutines, each with its own
// coordinator.Client over all of addrs, that launch (one of two specs),
// cancel and read the sweeps prefix-0, prefix-1 and prefix-2 with random
// pauses of 5–30 ms until ctx ends, recording every call for
// CheckLinearizable. Each call gets its own linOpTimeout deadline, not ctx's,
// so calls in flight when ctx ends still finish (Wait waits at most that
// long for them). The sweeps have no trials, so nothing is scheduled; their
// names must not be used by anything else on the cluster.
func StartClients(t testing.TB, ctx context.Context, addrs []string, clients int, prefix string, opts ...grpc.DialOption) *History {
	t.Helper()
	names := make([]string, 3)
	for i := range names {
		names[i] = fmt.Sprintf("%s-%d", prefix, i)
	}
	h := &History{base: time.Now()}
	for range clients {
		cl, err := coordinator.NewClient(addrs, opts...)
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
func (h *History) client(ctx context.Context, cl *coordinator.Client, names []string) {
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
func (h *History) record(id int, in linInput, call int64, r linResult) bool {
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

func (h *History) now() int64 { return int64(time.Since(h.base)) }

// Completed returns how many calls have returned a definite outcome so far
// (a read counts once), for a test that waits for progress between faults.
func (h *History) Completed() int64 { return h.completed.Load() }

// Wait waits for the clients to stop (after ctx ends) and returns the history.
func (h *History) Wait() []porcupine.Operation {
	h.wg.Wait()
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]porcupine.Operation(nil), h.ops...)
}

// run lets the clients run for at least d and until they have completed
// calls more calls, failing the test if that takes 10 s longer than d: a
// test phase that ends on progress, not on time alone.
func (h *History) Run(t testing.TB, d time.Duration, calls int64) {
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

// CheckLinearizable checks ops against linModel. It fails the test when the
// history is not linearizable (writing porcupine's visualization to
// $LORAFT_LIN_OUT, or else to a temporary directory, and logging its path),
// when the checker times out, or when no write or no read completed — a
// history of unknown outcomes proves nothing. name labels the log lines and
// the visualization's file.
func CheckLinearizable(t testing.TB, ops []porcupine.Operation, name string) {
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
