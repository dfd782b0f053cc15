package loopback

import (
	"net"
	"testing"
)

func TestAddrsAreDistinctAndBindable(t *testing.T) {
	addrs, err := Addrs(5)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, a := range addrs {
		if seen[a] {
			t.Fatalf("address %s returned twice in %v", a, addrs)
		}
		seen[a] = true
		l, err := net.Listen("tcp", a)
		if err != nil {
			t.Fatalf("returned address %s is not free: %v", a, err)
		}
		l.Close()
	}
}
