package coordinator_test

import (
	"bufio"
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/loraft/loraft/coordinator"
	"github.com/loraft/loraft/coordinator/coordinatortest"
	"github.com/loraft/loraft/coordinator/dashboard"
	pb "github.com/loraft/loraft/proto/coordinatorpb"
)

// TestDashboardMounted: coordinator.Dashboard serves the dashboard beside
// /metrics on the HTTP listener, and Close is not held up by an open event
// stream (the listener's shutdown ends it).
func TestDashboardMounted(t *testing.T) {
	c := coordinatortest.NewCluster(t, 1, coordinatortest.Options{Configure: func(_ int, cfg *coordinator.Config) {
		cfg.HTTPAddr = "127.0.0.1:0"
		cfg.HTTPHandlers = coordinator.Dashboard(t.Context(), dashboard.Config{})
	}})
	c.WaitForLeader(10 * time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := c.Client().LaunchSweep(ctx, &pb.Sweep{Name: "mounted", DatasetSha256: "x", Trials: []*pb.Trial{{Name: "mounted-t0", Rank: 8, Alpha: 16}}}); err != nil {
		t.Fatal(err)
	}
	m := c.Members[0]
	client := &http.Client{Timeout: 10 * time.Second}
	for _, tc := range []struct{ path, want string }{
		{"", `data-page="sweeps"`},
		{"sweeps/mounted", `data-name="mounted"`},
		{"api/sweeps", `"name":"mounted"`},
		{"api/raft", `"leader_id":"n1"`},
		{"metrics", "go_goroutines"},
	} {
		if code, body := get(t, client, m.HTTPURL()+tc.path); code != http.StatusOK || !strings.Contains(body, tc.want) {
			t.Errorf("GET /%s: %d, want 200 with %q:\n%.400s", tc.path, code, tc.want, body)
		}
	}

	req, err := http.NewRequestWithContext(ctx, "GET", m.HTTPURL()+"api/sweeps/mounted/events", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	line, err := bufio.NewReader(resp.Body).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, `data: {"name":"mounted"`) {
		t.Fatalf("first event: %q %v", line, err)
	}
	closed := make(chan error, 1)
	go func() { closed <- m.Close() }()
	select {
	case err := <-closed:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("Close did not return with an event stream open")
	}
}
