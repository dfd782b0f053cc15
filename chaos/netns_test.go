//go:build chaos

package chaos

import (
	"fmt"
	"os/exec"
	"strings"
	"testing"
)

// network is a bridge in this namespace with one network namespace per
// coordinator behind it, each on its own IP: the test, the trainers and
// MinIO stay here and reach the coordinators through the bridge. Cutting a
// namespace's link drops its packets silently, as a dead switch port or a
// black-holed host does.
type network struct {
	bridge string
	netns  []string // one per coordinator
	hosts  []string // their IPs
	links  []string // their links on the bridge, in this namespace
}

// newNetwork creates the bridge and n namespaces; they are removed when the
// test ends. It needs root (ip netns, ip link).
func newNetwork(t *testing.T, n int) *network {
	t.Helper()
	nw := &network{bridge: "lrftchaos0"}
	ip := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v\n%s (the partition scenario needs root and iproute2)", strings.Join(args, " "), err, out)
		}
	}
	cleanup := func() {
		for _, ns := range nw.netns {
			_ = exec.Command("ip", "netns", "del", ns).Run()
		}
		for _, l := range nw.links {
			_ = exec.Command("ip", "link", "del", l).Run()
		}
		_ = exec.Command("ip", "link", "del", nw.bridge).Run()
	}
	cleanup() // what a killed earlier run left
	t.Cleanup(cleanup)
	ip("link", "add", nw.bridge, "type", "bridge")
	ip("addr", "add", "10.99.0.254/24", "dev", nw.bridge)
	ip("link", "set", nw.bridge, "up")
	for i := range n {
		ns, host, link := fmt.Sprintf("lrftchaos-n%d", i+1), fmt.Sprintf("10.99.0.%d", 11+i), fmt.Sprintf("lrftc%dh", i+1)
		nw.netns, nw.hosts, nw.links = append(nw.netns, ns), append(nw.hosts, host), append(nw.links, link)
		ip("netns", "add", ns)
		ip("link", "add", link, "type", "veth", "peer", "name", "eth0", "netns", ns)
		ip("link", "set", link, "master", nw.bridge, "up")
		ip("-n", ns, "addr", "add", host+"/24", "dev", "eth0")
		ip("-n", ns, "link", "set", "eth0", "up")
		ip("-n", ns, "link", "set", "lo", "up")
	}
	return nw
}

// cut takes coordinator i's link down (true) or up again (false).
func (nw *network) cut(i int, down bool) error {
	state := "up"
	if down {
		state = "down"
	}
	if out, err := exec.Command("ip", "link", "set", nw.links[i], state).CombinedOutput(); err != nil {
		return fmt.Errorf("ip link set %s %s: %v: %s", nw.links[i], state, err, out)
	}
	return nil
}
