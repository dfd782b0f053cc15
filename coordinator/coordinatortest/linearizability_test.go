package coordinatortest

import (
	"os"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
)

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
