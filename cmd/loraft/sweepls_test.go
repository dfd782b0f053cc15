package main

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/loraft/loraft/coordinator/coordinatortest"
	pb "github.com/loraft/loraft/proto/coordinatorpb"
)

// TestSweepLsRunLsDelete: `sweep ls` and `run ls` list more sweeps and
// runs than one page holds (ListSweeps/ListTrials page by page), and
// `sweep delete` refuses a sweep with pending runs, then deletes it once
// cancelled.
func TestSweepLsRunLsDelete(t *testing.T) {
	c := coordinatortest.NewCluster(t, 1, coordinatortest.Options{})
	c.WaitForLeader(20 * time.Second)
	cl := c.Client()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	const sweeps, trials = 120, 3 // 120 sweeps and 360 runs: more than a 100-item page
	for i := range sweeps {
		sw := &pb.Sweep{Name: fmt.Sprintf("s%03d", i), DatasetSha256: "abc"}
		for j := range trials {
			sw.Trials = append(sw.Trials, &pb.Trial{Name: fmt.Sprintf("s%03d-t%d", i, j), Index: int32(j), Rank: 8, Alpha: 16})
		}
		if err := cl.LaunchSweep(ctx, sw); err != nil {
			t.Fatal(err)
		}
	}
	addr := "--coordinators=" + c.APIAddrs[0]
	out, err := run(t, "sweep", "ls", addr)
	if err != nil {
		t.Fatalf("sweep ls: %v\n%s", err, out)
	}
	if n := strings.Count(out, "\ns"); n != sweeps || !strings.Contains(out, "\ns119 ") {
		t.Fatalf("sweep ls: %d sweep rows, want %d:\n%s", n, sweeps, out)
	}
	out, err = run(t, "run", "ls", addr)
	if err != nil {
		t.Fatalf("run ls: %v\n%s", err, out)
	}
	if n := strings.Count(out, "PENDING"); n != sweeps*trials {
		t.Fatalf("run ls: %d runs, want %d", n, sweeps*trials)
	}
	out, err = run(t, "run", "ls", "--sweep", "s007", addr)
	if err != nil || strings.Count(out, "PENDING") != trials || !strings.Contains(out, "s007-t2") {
		t.Fatalf("run ls --sweep s007: %v\n%s", err, out)
	}
	if out, err := run(t, "sweep", "delete", addr, "s007"); err == nil || !strings.Contains(err.Error(), "s007-t0 (PENDING)") {
		t.Fatalf("deleting a sweep with pending runs: %v\n%s", err, out)
	}
	if out, err := run(t, "sweep", "cancel", addr, "s007"); err != nil {
		t.Fatalf("sweep cancel: %v\n%s", err, out)
	}
	if out, err := run(t, "sweep", "delete", addr, "s007"); err != nil || !strings.Contains(out, "sweep s007 deleted") {
		t.Fatalf("sweep delete: %v\n%s", err, out)
	}
	out, err = run(t, "sweep", "ls", addr)
	if err != nil || strings.Contains(out, "s007") || strings.Count(out, "\ns") != sweeps-1 {
		t.Fatalf("sweep ls after the delete: %v\n%s", err, out)
	}
}
