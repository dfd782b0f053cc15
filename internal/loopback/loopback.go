// Package loopback reserves free TCP addresses on 127.0.0.1 for local
// clusters, benchmarks and tests.
package loopback

import (
	"fmt"
	"net"
)

// Addrs returns n distinct free 127.0.0.1:port addresses. The ports are
// free when it returns (all n are held at once while choosing, so they
// differ); another process could still take one before the caller binds it.
func Addrs(n int) ([]string, error) {
	ls := make([]net.Listener, 0, n)
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	out := make([]string, 0, n)
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("finding a free loopback port: %w", err)
		}
		ls = append(ls, l)
		out = append(out, l.Addr().String())
	}
	return out, nil
}
